"""Packed checkpoints (qbench.quant.checkpoint): export -> load equals the fake-quantized weights, for every
scheme and bit-width; tied and shared embeddings are stored once; a damaged file is refused."""

import json

import pytest
import torch
from safetensors import safe_open
from torch.nn.utils import parametrize

from qbench.errors import QbenchError
from qbench.integrity import file_problem, sidecar
from qbench.quant.checkpoint import PACKED_NAME, export_packed, load_packed
from qbench.quant.kmeans import KMeans
from qbench.quant.linear import Linear
from qbench.quant.nf4 import NF4
from qbench.quant.wiring import quantize_model
from qbench.size import paper_b_bits
from tests.damage import DAMAGES
from tests.tiny import tiny_bart, tiny_bert, tiny_gpt2

GPT2_INCLUDE = ["*transformer.wte.weight", "*transformer.h.*"]  # lm_head (tied to wte) deliberately not named


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


def assert_reloads_exactly(model, path, x: torch.Tensor) -> None:
    """load_packed(path) holds exactly the fake-quantized weights and computes the same logits on input ids x."""
    loaded = load_packed(path)
    for name, w in fake_quantized(model).items():
        assert torch.equal(loaded.state_dict()[name], w), name
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, model(input_ids=x).logits)


SCHEMES = [lambda b: KMeans(bits=b)] + [
    (lambda b, s=s, g=g: Linear(bits=b, symmetric=s, granularity=g, group_size=16))
    for s in (False, True)
    for g in ("tensor", "row", "group")
]
SCHEME_IDS = ["kmeans"] + [f"linear-{'sym' if s else 'asym'}-{g}" for s in (0, 1) for g in ("tensor", "row", "group")]
SCHEMES += [lambda b: KMeans(bits=b, granularity="row"), lambda b: KMeans(bits=b, granularity="group", group_size=16)]
SCHEMES += [lambda b: NF4(bits=max(b, 2), block_size=48)]  # NF4 needs 2+ bits; 48: blocks straddle rows
SCHEME_IDS += ["kmeans-row", "kmeans-group", "nf4"]


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
    assert_reloads_exactly(model, tmp_path / "m.safetensors", torch.randint(0, 100, (2, 10)))


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


def test_per_tensor_bits_survive_the_round_trip(tmp_path):
    """scheme.bits_by: each tensor is packed at its own bits, reloads exactly, and paper B's count uses them."""
    model = tiny_bert()
    bits_by = {"*.layer.0.*": 8, "*word_embeddings*": 2}
    quantize_model(model, KMeans(bits=3, bits_by=bits_by), ["*.embeddings.*", "*.encoder.*"], [])
    export_packed(model, tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        info = json.loads(f.metadata()["qbench"])["quantized"]
    assert info["bert.embeddings.word_embeddings.weight"]["bits"] == 2
    assert info["bert.encoder.layer.0.attention.self.query.weight"]["bits"] == 8
    assert info["bert.encoder.layer.1.attention.self.query.weight"]["bits"] == 3
    assert_reloads_exactly(model, tmp_path / "m.safetensors", torch.randint(0, 100, (2, 10)))
    p = paper_b_bits(model, 3)
    layer0 = sum(m.weight.numel() for m in model.bert.encoder.layer[0].modules() if isinstance(m, torch.nn.Linear))
    n_emb = 100 * 32
    assert p["bits"] == 2 * n_emb + 8 * layer0 + 3 * (p["b_bit_params"] - n_emb - layer0) + 32 * p["fp_params"]


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
    assert_reloads_exactly(model, tmp_path / "m.safetensors", torch.randint(3, 100, (1, 8)))


@pytest.mark.parametrize("sealed", [True, False], ids=["with-manifest", "older-without"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_packed_file_is_refused_in_one_line(tmp_path, damage, sealed):
    model = tiny_bert()
    quantize_model(model, KMeans(bits=2), ["*.encoder.*"], [])
    path = tmp_path / PACKED_NAME
    export_packed(model, path)
    assert sidecar(path).is_file() and file_problem(path) is None
    if not sealed:  # a file written before manifests: the format's own checks
        sidecar(path).unlink()
    DAMAGES[damage](path)
    with pytest.raises(QbenchError, match="damaged packed checkpoint|not a qbench packed checkpoint") as e:
        load_packed(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
