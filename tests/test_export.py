"""Packed checkpoints: export -> load equals the fake-quantized weights; sizes; the CLI (run export=true, export,
size)."""

import json
import re
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save, save_file
from torch.nn.utils import parametrize
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
)

from qbench.quant.checkpoint import PACKED_NAME, export_packed, load_packed
from qbench.quant.kmeans import KMeans
from qbench.quant.linear import Linear
from qbench.quant.wiring import quantize_model
from qbench.size import fp32_bytes, paper_b_bits, safetensors_nbytes, size_section
from tests.conftest import qbench, read_record

GPT2_INCLUDE = ["*transformer.wte.weight", "*transformer.h.*"]  # lm_head (tied to wte) deliberately not named


def tiny_gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64)).eval()


def tiny_bert():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=64)  # fmt: skip
    return BertForSequenceClassification(cfg).eval()


def tiny_bart():
    torch.manual_seed(0)
    cfg = BartConfig(vocab_size=100, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                     max_position_embeddings=64)  # fmt: skip
    return BartForConditionalGeneration(cfg).eval()


def fake_quantized(model) -> dict[str, torch.Tensor]:
    """{name: the weight the scheme defines} for every quantized tensor: LinearFakeQuant.quantized(latent),
    Codebook(latent) = centroids[labels]; also checks that the forward pass computes with exactly that."""
    out = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            plist = module.parametrizations.weight
            p, latent = plist[0], plist.original.detach()
            with torch.no_grad():
                out[f"{name}.weight"] = p.quantized(latent) if hasattr(p, "quantized") else p(latent)
                assert torch.equal(module.weight, out[f"{name}.weight"]), name  # the forward pass uses exactly it
    return out


SCHEMES = [lambda b: KMeans(bits=b)] + [
    (lambda b, s=s, g=g: Linear(bits=b, symmetric=s, granularity=g, group_size=16))
    for s in (False, True)
    for g in ("tensor", "row", "group")
]
SCHEME_IDS = ["kmeans"] + [f"linear-{'sym' if s else 'asym'}-{g}" for s in (0, 1) for g in ("tensor", "row", "group")]


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("make", SCHEMES, ids=SCHEME_IDS)
def test_round_trip_equals_fake_quantized_weights(tmp_path, make, bits):
    model = tiny_gpt2()  # Conv1D (transposed) weights and a tied embedding
    quantize_model(model, make(bits), GPT2_INCLUDE, [])
    path = tmp_path / PACKED_NAME
    nbytes = export_packed(model, path, {"test": True})
    assert nbytes == path.stat().st_size
    loaded = load_packed(path)
    assert not any(parametrize.is_parametrized(m) for m in loaded.modules())
    sd = loaded.state_dict()
    expected = fake_quantized(model)
    assert len(expected) == 1 + 4 * 2 + 1  # wte, 4 Conv1D per block, lm_head (the same tensor as wte)
    for name, w in expected.items():
        assert sd[name].dtype == w.dtype and torch.equal(sd[name], w), name
    for name, t in model.state_dict().items():  # everything not quantized: as is
        if ".parametrizations." not in name:
            assert torch.equal(sd[name], t), name
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


@pytest.mark.parametrize("make", [SCHEMES[0], SCHEMES[2]], ids=["kmeans", "linear-asym-row"])
def test_bert_round_trip_and_same_predictions(tmp_path, make):
    model = tiny_bert()
    quantize_model(model, make(3), ["*.embeddings.*", "*.encoder.*"], [])
    export_packed(model, tmp_path / "m.safetensors")
    loaded = load_packed(tmp_path / "m.safetensors")
    for name, w in fake_quantized(model).items():
        assert torch.equal(loaded.state_dict()[name], w), name
    x = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, model(input_ids=x).logits)


def test_embed_bits_and_act_bits_survive_the_round_trip(tmp_path):
    model = tiny_bert()
    quantize_model(model, Linear(bits=3, embed_bits=8, act_bits=8), ["*.embeddings.*", "*.encoder.*"], [])
    export_packed(model, tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        info = json.loads(f.metadata()["qbench"])
    assert info["quantized"]["bert.embeddings.word_embeddings.weight"]["bits"] == 8
    assert info["quantized"]["bert.encoder.layer.0.attention.self.query.weight"]["bits"] == 3
    assert len(info["act_quant"]) == 2 * 6 and set(info["act_quant"].values()) == {8}
    loaded = load_packed(tmp_path / "m.safetensors")
    x = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, model(input_ids=x).logits)
    p = paper_b_bits(model, 3, embed_bits=8)
    n_emb = 100 * 32
    assert p["bits"] == 8 * n_emb + 3 * (p["b_bit_params"] - n_emb) + 32 * p["fp_params"]


@pytest.mark.parametrize("name", ["pact", "lsq", "mds", "laq"])
def test_scaled_qat_schemes_round_trip(tmp_path, name):
    import importlib

    mod = importlib.import_module(f"qbench.quant.{name}")
    scheme_cls = getattr(mod, {"pact": "PACT", "lsq": "LSQ", "mds": "MDS", "laq": "LAQ"}[name])
    for bits in (1, 2, 5) if name != "lsq" else (2, 5):  # LSQ rejects 1 bit
        model = tiny_gpt2()
        quantize_model(model, scheme_cls(bits=bits), GPT2_INCLUDE, [])
        export_packed(model, tmp_path / "m.safetensors")
        loaded = load_packed(tmp_path / "m.safetensors")
        for n, w in fake_quantized(model).items():
            assert torch.equal(loaded.state_dict()[n], w), (bits, n)


def test_tied_embeddings_stored_once_gpt2(tmp_path):
    model = tiny_gpt2()
    quantize_model(model, KMeans(bits=2), GPT2_INCLUDE, [])
    # lm_head is not named in include, but it is the same tensor: it computes with the quantized copy
    assert parametrize.is_parametrized(model.lm_head, "weight")
    assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    export_packed(model, tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        keys, info = set(f.keys()), json.loads(f.metadata()["qbench"])
    assert not any(k.startswith("lm_head") for k in keys)
    assert {"transformer.wte.weight.codes", "transformer.wte.weight.centroids"} <= keys
    assert "transformer.wte.weight" not in keys  # no full-precision latent copy
    assert info["quantized"]["transformer.wte.weight"]["tied"] == ["lm_head.weight"]
    assert info["quantized"]["transformer.h.0.attn.c_attn.weight"]["transposed"] is True


def test_tied_full_precision_embedding_stored_once(tmp_path):
    model = tiny_gpt2()
    quantize_model(model, Linear(bits=4), ["*transformer.h.*"], [])  # wte / lm_head stay fp32
    export_packed(model, tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "transformer.wte.weight" in keys and "lm_head.weight" not in keys
    loaded = load_packed(tmp_path / "m.safetensors")
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert torch.equal(loaded.lm_head.weight, model.transformer.wte.weight)


def test_bart_shared_embedding_stored_once(tmp_path):
    model = tiny_bart()
    quantize_model(model, KMeans(bits=2), ["*model.shared.weight", "*encoder.layers.*", "*decoder.layers.*"], [])
    for m in (model.model.encoder.embed_tokens, model.model.decoder.embed_tokens, model.lm_head):
        assert parametrize.is_parametrized(m, "weight") and torch.equal(m.weight, model.model.shared.weight)
    export_packed(model, tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert sum("shared" in k or "embed_tokens" in k or "lm_head" in k for k in keys) == 2  # codes + centroids
    loaded = load_packed(tmp_path / "m.safetensors")
    for name, w in fake_quantized(model).items():
        assert torch.equal(loaded.state_dict()[name], w), name
    x = torch.randint(3, 100, (1, 8))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, model(input_ids=x).logits)


def test_safetensors_nbytes_is_exact():
    u8, i64, f16 = torch.uint8, torch.int64, torch.float16
    tensors = {"zz": torch.zeros(3, dtype=u8), "a.b": torch.zeros(2, 5), "m": torch.zeros(7, dtype=u8),
               "i": torch.zeros(4, dtype=i64), "h": torch.zeros(3, dtype=f16)}  # fmt: skip
    for md in ({}, {"format": "pt", "x": 'quote " and ünïcode'}):
        entries = {k: (v.dtype, v.shape) for k, v in tensors.items()}
        assert safetensors_nbytes(entries, md) == len(save(tensors, metadata=md or None))


def test_fp32_bytes_is_the_fp32_checkpoint(tmp_path):
    model = tiny_bert()
    save_file(model.state_dict(), str(tmp_path / "fp32.safetensors"), metadata={"format": "pt"})
    expected = (tmp_path / "fp32.safetensors").stat().st_size
    assert fp32_bytes(model) == expected
    quantize_model(model, KMeans(bits=2), ["*.embeddings.*", "*.encoder.*"], [])
    assert fp32_bytes(model) == expected  # same model, quantized: latents and codebooks are not counted


def test_size_section_computed_equals_file_and_paper_b():
    model = tiny_gpt2()
    n_total = sum(p.numel() for p in model.parameters())
    quantize_model(model, KMeans(bits=2), GPT2_INCLUDE, [])
    s = size_section(model, 2, None, {"a": 1})
    with tempfile.TemporaryDirectory() as d:
        f = size_section(model, 2, Path(d) / PACKED_NAME, {"a": 1})
        assert f["packed_bytes"] == (Path(d) / PACKED_NAME).stat().st_size
    assert s["packed_bytes"] == f["packed_bytes"] and s["packed_bytes_source"] == "computed"
    q = 100 * 32 + 2 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32)
    assert s["quantized_params"] == q and s["fp_params"] == n_total - q
    assert s["code_bytes"] == q * 2 // 8  # every tensor's size is a multiple of 4
    assert s["side_bytes"] == 9 * 4 * 4 and s["effective_bits"] == 8 * (s["code_bytes"] + s["side_bytes"]) / q
    p = paper_b_bits(model, 2)
    assert p["b_bit_params"] == q and p["fp_here"] == []
    assert p["ratio"] == pytest.approx(32 * n_total / (2 * q + 32 * (n_total - q)))
    assert s["ratio_fp32"] == s["fp32_bytes"] / s["packed_bytes"] and s["ratio_paper"] == p["ratio"]


def test_run_export_true_then_load_gives_the_record_metrics(tmp_path, data_dir):
    from omegaconf import OmegaConf

    from qbench import kinds
    from qbench.cell import parse
    from qbench.models import load_tokenizer

    p = qbench("run", "model=tiny_bert", "task=rte", "train=debug", "train.max_eval_examples=48", "export=true",
               f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    r = read_record(tmp_path)
    packed = tmp_path / PACKED_NAME
    s = r["size"]
    assert s["packed_bytes_source"] == "file" and s["packed_bytes"] == packed.stat().st_size
    assert s["nominal_bits"] == 2 and 2.0 < s["effective_bits"] < 2.01 and s["ratio_fp32"] > 10
    cell = parse(OmegaConf.create(r["config"]))
    kind, tok = kinds.get(cell.task.kind), load_tokenizer(cell.model)
    model = load_packed(packed)
    data = kind.load_data(cell, tok, need_train=False)
    metrics, _ = kind.evaluate(cell, model, tok, data)
    assert metrics == r["metrics"]
    # already exported: `qbench export` checks that it loads and reports it
    p = qbench("export", str(tmp_path))
    assert p.returncode == 0 and "already exported" in p.stdout, p.stderr[-2000:]


def test_export_command_reruns_a_run_without_packed_file(tmp_path, data_dir):
    p = qbench("run", "model=tiny_bert", "task=rte", "train=debug", "train.max_eval_examples=48", "scheme=linear",
               "bits=3", f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    before = read_record(tmp_path)
    assert before["size"]["packed_bytes_source"] == "computed" and not (tmp_path / PACKED_NAME).exists()
    p = qbench("export", str(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:]
    after = read_record(tmp_path)
    assert (tmp_path / PACKED_NAME).stat().st_size == after["size"]["packed_bytes"] == before["size"]["packed_bytes"]
    assert after["size"]["packed_bytes_source"] == "file" and (tmp_path / "record.before-export.json").exists()
    assert "same as the original record" in p.stdout and after["metrics"] == before["metrics"]


def test_size_command_last_line(tmp_path):
    p = qbench("size", "model=tiny_bert", "scheme=linear", "bits=3")
    assert p.returncode == 0, p.stderr[-2000:]
    last = p.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ratio_fp32=\d+\.\d\d ratio_paper=\d+\.\d\d", last), last
    assert "fp32 safetensors file" in p.stdout
    p = qbench("size", "model=tiny_bert", "scheme=none")
    assert p.returncode == 2 and "nothing is quantized" in p.stderr
