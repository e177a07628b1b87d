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
