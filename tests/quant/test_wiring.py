import pytest
import torch
from torch.nn.utils import parametrize
from transformers import AlbertConfig, AlbertForSequenceClassification, BertConfig, BertForSequenceClassification

from qbench.errors import QbenchError
from qbench.quant.kmeans import KMeans
from qbench.quant.linear import Linear
from qbench.quant.wiring import quantize_model

INCLUDE, EXCLUDE = ["*.embeddings.*", "*.encoder.*"], []


def tiny_bert():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    return BertForSequenceClassification(cfg)


def tiny_albert():
    torch.manual_seed(0)
    cfg = AlbertConfig(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                       intermediate_size=32)  # fmt: skip
    return AlbertForSequenceClassification(cfg)


def test_default_selection_embeddings_and_encoder_linears_only():
    model = tiny_bert()
    report = quantize_model(model, Linear(bits=4), INCLUDE, EXCLUDE)
    names = {t.name for t in report.tensors}
    assert "bert.embeddings.word_embeddings.weight" in names
    assert "bert.embeddings.token_type_embeddings.weight" in names
    assert "bert.encoder.layer.1.output.dense.weight" in names
    assert not any("LayerNorm" in n or "bias" in n or "classifier" in n or "pooler" in n for n in names)
    assert len(names) == 3 + 2 * 6  # 3 embeddings + 6 Linear weights per layer
    assert not parametrize.is_parametrized(model.classifier)
    s = report.summary()
    assert s["quantized_params"] == sum(t.numel for t in report.tensors)
    assert 0.5 < s["quantized_share"] < 1
    assert s["effective_bits"] > 4  # codes plus per-row scales


def test_exclude_wins_over_include():
    model = tiny_bert()
    report = quantize_model(model, Linear(bits=4), INCLUDE, ["*word_embeddings*", "*.attention.*"])
    names = {t.name for t in report.tensors}
    assert "bert.embeddings.word_embeddings.weight" not in names
    assert not any(".attention." in n for n in names)
    assert "bert.encoder.layer.0.intermediate.dense.weight" in names


def test_no_match_is_a_user_error():
    with pytest.raises(QbenchError, match="no weight matches"):
        quantize_model(tiny_bert(), Linear(bits=4), ["*nothing*"], [])


def test_kmeans_trains_centroids_not_latent_weights():
    model = tiny_bert()
    quantize_model(model, KMeans(bits=2), INCLUDE, EXCLUDE)
    out = model(input_ids=torch.randint(0, 50, (2, 6)), labels=torch.tensor([0, 1]))
    out.loss.backward()
    q = model.bert.encoder.layer[0].attention.self.query
    assert q.parametrizations.weight[0].centroids.grad is not None
    assert q.parametrizations.weight.original.grad is None
    assert len(torch.unique(q.weight)) <= 4


def test_albert_shared_weights_have_one_quantizer_and_stay_shared():
    model = tiny_albert()
    report = quantize_model(model, KMeans(bits=2), INCLUDE, EXCLUDE)
    layer_tensors = [t for t in report.tensors if "albert_layer_groups" in t.name]
    assert len(layer_tensors) == 6  # q, k, v, dense, ffn, ffn_output: once, not once per layer (4 layers)
    assert model.config.num_hidden_layers == 4
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(input_ids=torch.randint(0, 50, (2, 6)), labels=torch.tensor([0, 1])).loss.backward()
    opt.step()
    # every layer still reads the one shared (quantized) tensor: a single codebook of <= 4 values
    shared = model.albert.encoder.albert_layer_groups[0].albert_layers[0].attention.query
    assert len(torch.unique(shared.weight)) <= 4


def test_tied_weights_quantized_once():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=40, n_positions=16))
    assert model.lm_head.weight is model.transformer.wte.weight
    report = quantize_model(model, KMeans(bits=2), ["*wte.weight", "*lm_head.weight", "*.h.*"], [])
    wte = [t for t in report.tensors if t.name.endswith("wte.weight")]
    assert len(wte) == 1 and wte[0].shared_with == ["lm_head.weight"]
    assert not any(t.name == "lm_head.weight" for t in report.tensors)
    assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    assert len(torch.unique(model.lm_head.weight)) <= 4


def bits_of(model, report) -> dict[str, int]:
    """{weight name: its quantizer's bits}, checked against the report's per-tensor bits."""
    out = {
        t.name: model.get_submodule(t.name.rsplit(".", 1)[0]).parametrizations.weight[0].bits for t in report.tensors
    }
    assert out == {t.name: t.bits for t in report.tensors}
    return out


@pytest.mark.parametrize("scheme", ["linear", "kmeans", "nf4", "pact", "lsq", "mds", "laq"])
def test_bits_by_sets_each_tensors_bits_first_match_wins(scheme):
    """Per-tensor bits come from the Scheme base, so every scheme takes them: the first matching pattern, else
    embed_bits for embeddings, else bits. The effective bits average the tensors' own bits."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    cls = get_class(OmegaConf.load(f"conf/scheme/{scheme}.yaml")["_target_"])
    bits_by = {"*.layer.0.attention.self.*": 8, "*.layer.0.*": 3, "*word_embeddings*": 2}
    model = tiny_bert()
    report = quantize_model(model, cls(bits=4, embed_bits=5, bits_by=bits_by), INCLUDE, EXCLUDE)
    bits = bits_of(model, report)
    assert bits["bert.encoder.layer.0.attention.self.query.weight"] == 8  # first match, not *.layer.0.*
    assert bits["bert.encoder.layer.0.attention.output.dense.weight"] == 3
    assert bits["bert.encoder.layer.0.intermediate.dense.weight"] == 3
    assert bits["bert.embeddings.word_embeddings.weight"] == 2
    assert bits["bert.embeddings.position_embeddings.weight"] == 5  # no pattern: embed_bits
    assert bits["bert.encoder.layer.1.output.dense.weight"] == 4  # no pattern: bits
    s = report.summary()
    code = sum(t.bits * t.numel for t in report.tensors)
    overhead = sum(t.overhead_bits for t in report.tensors)
    assert s["effective_bits"] == pytest.approx((code + overhead) / s["quantized_params"])
    assert s["bits"] == 4 and s["bits_by"] == bits_by  # the record keeps the nominal bits and the patterns


def test_bits_by_matches_a_tied_alias_and_only_restricts_what_is_quantized():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=40, n_positions=16))
    include = ["*wte.weight", "*lm_head.weight", "*.h.*"]
    report = quantize_model(model, Linear(bits=4, bits_by={"lm_head.weight": 8}), include, [])
    assert bits_of(model, report)["transformer.wte.weight"] == 8  # the LM head is the same tensor
    model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=40, n_positions=16))
    report = quantize_model(model, Linear(bits=4, only=["*.h.1.*"]), include, [])
    assert {t.name for t in report.tensors} == {
        f"transformer.h.1.{m}.weight" for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    assert not parametrize.is_parametrized(model.transformer.h[0].attn.c_attn)
    with pytest.raises(QbenchError, match=r"no weight matches .* scheme.only=\['\*nothing\*'\]"):
        quantize_model(tiny_bert(), Linear(bits=4, only=["*nothing*"]), INCLUDE, EXCLUDE)


@pytest.mark.parametrize("options,message", [
    ({"bits_by": {"*": 9}}, "bits must be an integer in 1..8"),
    ({"bits_by": {"*": True}}, "bits must be an integer in 1..8"),
    ({"bits_by": {"": 2}}, "a pattern must be a non-empty string"),
    ({"bits_by": {3: 2}}, "a pattern must be a non-empty string"),
    ({"only": []}, "scheme.only=.*a non-empty list"),
])  # fmt: skip
def test_bits_by_and_only_are_validated(options, message):
    with pytest.raises(QbenchError, match=message):
        KMeans(bits=2, **options)


def test_a_schemes_own_limits_apply_to_bits_by():
    from qbench.quant.nf4 import NF4

    with pytest.raises(QbenchError, match=r"scheme.bits_by '\*attention\*': 1: scheme=nf4 needs bits >= 2"):
        NF4(bits=4, bits_by={"*attention*": 1})


def test_a_bits_by_override_runs_through_parse_to_quantize(data_dir):
    """`+scheme.bits_by={...}` on the command line composes, parses into the scheme and quantizes per pattern."""
    from hydra import compose, initialize_config_module

    from qbench.cell import parse
    from tests.tiny import tiny_bert as tiny

    over = "+scheme.bits_by={*.layer.1.*:8,*.embeddings.*:3}"
    with initialize_config_module("qbench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["model=tiny_bert", "task=rte", "train=debug", "scheme=linear", over])
    cell = parse(cfg)
    assert cell.scheme.bits_by == {"*.layer.1.*": 8, "*.embeddings.*": 3}
    model = tiny()
    bits = bits_of(model, quantize_model(model, cell.scheme, cell.model.include, cell.model.exclude))
    assert {b for n, b in bits.items() if ".layer.1." in n} == {8} and {
        b for n, b in bits.items() if ".layer.0." in n
    } == {2}
    assert {b for n, b in bits.items() if ".embeddings." in n} == {3}
