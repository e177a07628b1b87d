"""Activation fake-quantization (act_bits): per-token ranges, so an example's outputs do not depend on its batch."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from qbench.config import model_schema
from qbench.models import load_model
from qbench.quant.linear import Linear
from qbench.quant.primitives import act_fake_quant
from qbench.quant.wiring import ActFakeQuant, quantize_model

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
VOCAB = 256


@pytest.mark.parametrize("bits", [1, 2, 8])
def test_each_token_is_quantized_on_its_own_range(bits):
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(3, 5, 16, generator=g)  # (batch, tokens, features)
    x[0, 0] *= 1000  # an outlier token must not coarsen the grid of the others
    q = act_fake_quant(x, bits)
    for b in range(3):
        for t in range(5):
            assert torch.equal(q[b, t], act_fake_quant(x[b, t], bits))
    n = max(1, 2 ** (bits - 1) - 1)
    step = x.abs().amax(-1, keepdim=True) / n  # (batch, tokens, 1)
    if bits > 1:  # on each token's own grid: error at most half its step, its max|x| exact
        assert ((q - x).abs() <= step / 2 + 1e-6).all()
        assert torch.allclose(q.abs().amax(-1), x.abs().amax(-1))
    assert torch.equal(act_fake_quant(torch.zeros(2, 4), bits), torch.zeros(2, 4))


def test_straight_through_gradient_is_exact():
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    y = ActFakeQuant(8)(None, (x,))[0]
    (y * torch.arange(8.0)).sum().backward()
    assert torch.equal(y.detach(), act_fake_quant(x.detach(), 8))
    assert torch.equal(x.grad, torch.arange(8.0).expand(2, 3, 8))


def test_record_names_the_activation_granularity():
    rep = quantize_model(nn.Sequential(nn.Linear(4, 4)), Linear(bits=2, act_bits=8), ["*"], []).summary()
    assert rep["act_granularity"] == "token" and rep["act_bits"] == 8
    assert "act_granularity" not in quantize_model(nn.Linear(4, 4), Linear(bits=2), ["*"], []).summary()


def tiny(name: str) -> tuple[nn.Module, dict]:
    """A conf/model tiny model (vocabulary cut to VOCAB) in float64 (float noise far below any quantization step),
    2-bit weights and 8-bit activations, eval mode; and its model config."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    vocab = cfg.config.vocab_size
    for k, v in list(cfg.config.items()):  # a 256-token vocabulary keeps the test fast; GPT-2's <|endoftext|> last
        if k.endswith("token_id") and v == vocab - 1:
            cfg.config[k] = VOCAB - 1
    cfg.config.vocab_size = VOCAB
    auto = {"encoder": AutoModelForSequenceClassification, "causal_lm": AutoModelForCausalLM,
            "seq2seq": AutoModelForSeq2SeqLM}[cfg.family]  # fmt: skip
    model = load_model(model_schema(cfg), auto, seed=0, **({"num_labels": 2} if cfg.family == "encoder" else {}))
    quantize_model(model, Linear(bits=2, act_bits=8), list(cfg.include), list(cfg.exclude))
    return model.double().eval(), cfg


def padded(seqs: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), each (batch, longest), right-padded."""
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), pad)
    mask = torch.zeros(len(seqs), longest, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = s, 1
    return ids, mask


def outputs(model, family: str, src: list[torch.Tensor], tgt: list[torch.Tensor], pad: int) -> list[torch.Tensor]:
    """Each example's logits at its real positions, from one padded batch: classification (labels,), causal LM
    (tokens, vocab), seq2seq (target tokens, vocab); a perplexity is a function of these."""
    ids, mask = padded(src, pad)
    if family == "seq2seq":
        dec, dmask = padded(tgt, pad)
        out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dmask).logits
        return [out[i, : len(t)] for i, t in enumerate(tgt)]
    out = model(input_ids=ids, attention_mask=mask).logits
    return list(out) if family == "encoder" else [out[i, : len(s)] for i, s in enumerate(src)]


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is ~50x faster than a thread pool on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", ["tiny_bert", "tiny_gpt2", "tiny_bart"])
@torch.no_grad()
def test_outputs_do_not_depend_on_batch_mates_or_padding(name, one_thread):
    model, cfg = tiny(name)
    g = torch.Generator().manual_seed(1)
    vocab, pad = model.config.vocab_size, model.config.pad_token_id or 0
    lengths = torch.randint(2, 24, (32,), generator=g).tolist()
    src = [torch.randint(0, vocab - 1, (n,), generator=g) for n in lengths]  # vocab - 1: GPT-2/BART's pad is last
    tgt = [torch.randint(0, vocab - 1, (n // 2 + 1,), generator=g) for n in lengths]
    alone = [outputs(model, cfg.family, [s], [t], pad)[0] for s, t in zip(src, tgt, strict=True)]
    for batch in (32, 5):  # padded batches of 32, and of 5 with other batch-mates
        together = [o for i in range(0, 32, batch)
                    for o in outputs(model, cfg.family, src[i : i + batch], tgt[i : i + batch], pad)]  # fmt: skip
        for a, b in zip(alone, together, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
