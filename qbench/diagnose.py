"""Paper B's diagnosis (Tao et al. 2022): how homogeneous a model's word embeddings and token representations are,
and how the ranges of its quantized weights vary across modules. Pure tensor math first, then what the pipeline
calls on the full-precision model (before quantizing) and on the quantized one (after evaluation):
`homogeneity(model, tok, inputs)` and `module_ranges(model)`.

The token sample: the first SAMPLE_TOKENS (2,048) tokens of the task's first evaluation split, in order, special
tokens (CLS, SEP, BOS, EOS, padding) left out, so every cell of a task (same model, same data) reads the same
tokens. A classification, dialog or summarization split is read example by example (one unpadded forward pass
each); a causal LM split (one token sequence) in consecutive chunks of at most CHUNK tokens. An encoder-decoder
model (BART) gives its decoder's states, teacher-forced on the reference summaries (the documents are the
encoder's input): the sampled tokens are the decoder's inputs, i.e. the summary tokens, as in generation.

Measures (each row of a matrix is one vector):
- mean_cosine: mean cosine similarity over pairs of distinct rows (1: all rows point the same way);
- distinct_rows: how many different rows there are (quantization can merge rows of the embedding);
- effective_rank (Roy & Vetterli 2007): exp of the entropy of the normalised singular values of the row-centred
  matrix, in [1, min(n, d)]: how many directions the vectors spread over. It is the uniformity measure that does
  not saturate: contextual representations share a large common direction (Ethayarajh 2019), which drives every
  pairwise cosine (and Wang & Isola's uniformity, which near collapse is about -2t·(1 - mean cosine)) towards its
  bound whatever the token-specific parts do; centring removes that direction and the normalisation the scale, so
  the effective rank keeps its resolution where the cosine is already 0.99. 0 when all rows are equal.
Embedding homogeneity is taken on the (quantized) word-embedding rows of the TOP_TOKENS (256) most frequent
non-special tokens of the whole first evaluation split (its inputs: an encoder-decoder's documents; ties: lower
token id first); its distinct rows are also counted over the whole vocabulary. Representation homogeneity is taken
on the last layer's states (hidden_states[-1], after the final LayerNorm where the model has one) and on the middle
layer's (hidden_states[L // 2] of the L + 1, the embedding output being 0).

Module ranges, per quantized tensor (its latent weight, as trained): max|w|/mean|w|, and, for a scheme with a
learned range (the parametrization's `learned_range(latent)`: PACT α, LSQ s, MDS γ, LAQ's fitted α), the clip
(the largest positive level) over mean|w|, at quantization (`clip_over_mean_init`) and at the end of training; so
MDS's γ is its own clip_over_mean. The learned values at quantization are kept too (`learned_init`), and
`range_moves` sums up how far training moved them: per learned name, the median and largest relative change over
the tensors (a range that cannot move under the optimizer's learning rate shows here). Layer index and module
type (attention q/k/v/qkv/o, ffn in/out, embedding) are parsed from the parameter name.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter

import torch
from torch import nn
from torch.nn.utils import parametrize

from qbench.kinds.causal_lm import model_context

SAMPLE_TOKENS = 2048  # tokens of the representation sample
TOP_TOKENS = 256  # most frequent tokens whose embedding rows are compared
CHUNK = 512  # tokens per forward pass over a causal LM's evaluation sequence (at most the model's context)


# --- pure tensor math ---
def mean_cosine(x: torch.Tensor) -> float:
    """Mean cosine similarity over the n(n-1) ordered pairs of distinct rows of x (n, d), n >= 2; a zero row has
    cosine 0 with every row. Computed in float64 as (|Σ u_i|² - Σ |u_i|²) / (n(n-1)), u_i the unit rows."""
    u = nn.functional.normalize(x.detach().double(), dim=1)
    n = u.shape[0]
    return float((u.sum(0).square().sum() - u.square().sum()) / (n * (n - 1)))


def distinct_rows(x: torch.Tensor) -> int:
    """Number of different rows of x (n, d)."""
    return int(torch.unique(x.detach(), dim=0).shape[0])


def effective_rank(x: torch.Tensor) -> float:
    """exp(entropy of σ / Σσ), σ the singular values of x (n, d) with its mean row subtracted; 0 when all rows are
    equal (see the module docstring)."""
    x = x.detach().double()
    x = x - x.mean(0)
    gram = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T  # its eigenvalues are σ²: cheaper than an SVD
    s = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    if s.sum() <= 1e-12 * max(1.0, float(x.abs().max())):
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def range_stats(w: torch.Tensor) -> dict:
    """max|w|, mean|w| and their ratio (the spread that one clip per module has to cover)."""
    a = w.detach().abs().double()
    mx, mean = float(a.max()), float(a.mean())
    return {"max_abs": mx, "mean_abs": mean, "max_over_mean": mx / mean if mean else math.inf}


ATTENTION = {  # module type -> name parts that mark it, first match wins (attention before FFN)
    "attention.qkv": ("c_attn", "qkv", "query_key_value"),
    "attention.q": ("query", "q_proj", "q_lin"),
    "attention.k": ("key", "k_proj", "k_lin"),
    "attention.v": ("value", "v_proj", "v_lin"),
    "attention.o": ("attention.output.dense", "attention.dense", "out_proj", "o_proj", "out_lin", "attn.c_proj"),
}
FFN = {
    "ffn.in": ("intermediate", "c_fc", "fc1", "gate_proj", "up_proj", "lin1", "ffn."),
    "ffn.out": ("output.dense", "mlp.c_proj", "fc2", "down_proj", "lin2", "ffn_output"),
}


def module_of(name: str) -> tuple[int | None, str]:
    """(layer index or None, module type) of a parameter name: 'embedding', 'attention.q|k|v|qkv|o', 'ffn.in',
    'ffn.out' or 'other'. E.g. bert.encoder.layer.3.attention.self.query.weight -> (3, 'attention.q')."""
    m = re.search(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.", name)
    layer = int(m.group(1)) if m else None
    if layer is None and re.search(r"embed|wte|wpe|shared|lm_head", name):
        return None, "embedding"
    return layer, next((kind for kind, keys in (ATTENTION | FFN).items() if any(k in name for k in keys)), "other")


# --- the token sample ---
def sample_inputs(inputs, tok, encoder_decoder: bool, chunk: int = CHUNK, n: int = SAMPLE_TOKENS) -> list[dict]:
    """The forward passes of the sample: [{model inputs (lists of ids), 'tokens': the ids whose states count}], in
    order, until n non-special tokens are covered (see the module docstring). `inputs`: a Split's inputs, one
    token-id list (causal LM) or a dataset with input_ids (and token_type_ids, labels)."""
    special, out, seen = set(tok.all_special_ids), [], 0
    if isinstance(inputs, list):  # causal LM: one sequence
        rows = ({"input_ids": inputs[i : i + chunk]} for i in range(0, len(inputs), chunk))
    else:
        rows = iter(inputs)
    for row in rows:
        if seen >= n:
            break
        feed = {k: list(row[k]) for k in ("input_ids", "token_type_ids") if k in row}
        if encoder_decoder:  # the decoder reads the summary, shifted right after the start token
            feed["decoder_input_ids"] = [decoder_start(tok)] + list(row["labels"])[:-1]
        ids = feed["decoder_input_ids" if encoder_decoder else "input_ids"]
        seen += sum(1 for t in ids if t not in special)
        out.append(feed)
    return out


def decoder_start(tok) -> int:
    return tok.eos_token_id if tok.eos_token_id is not None else tok.bos_token_id  # BART's decoder_start_token_id


def frequent_tokens(inputs, tok, k: int = TOP_TOKENS) -> list[int]:
    """The k most frequent non-special token ids of the split (ties: lower id first)."""
    special = set(tok.all_special_ids)
    seqs = [inputs] if isinstance(inputs, list) else inputs["input_ids"]
    counts = Counter(t for s in seqs for t in s if t not in special)
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


# --- on a model ---
@torch.no_grad()
def states(model: nn.Module, feeds: list[dict], tok, n: int = SAMPLE_TOKENS) -> tuple[torch.Tensor, ...]:
    """(last-layer states, middle-layer states, middle index, layers) of the first n non-special tokens of feeds."""
    device, special = next(model.parameters()).device, torch.tensor(sorted(tok.all_special_ids))
    last, middle, mid, layers = [], [], 0, 0
    for feed in feeds:
        batch = {k: torch.tensor([v], device=device) for k, v in feed.items()}
        out = model(**batch, output_hidden_states=True)
        hidden = out.decoder_hidden_states if "decoder_input_ids" in feed else out.hidden_states
        layers, mid = len(hidden) - 1, (len(hidden) - 1) // 2
        ids = batch.get("decoder_input_ids", batch["input_ids"])[0].cpu()
        keep = ~torch.isin(ids, special)
        last.append(hidden[-1][0].float().cpu()[keep])
        middle.append(hidden[mid][0].float().cpu()[keep])
    return torch.cat(last)[:n], torch.cat(middle)[:n], mid, layers


def homogeneity(model: nn.Module, tok, inputs, n: int = SAMPLE_TOKENS) -> dict:
    """The record's diagnosis of one model (FP or quantized) on a Split's inputs: its sample, embedding and
    representation measures (see the module docstring). The model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        with parametrize.cached():
            chunk = min(CHUNK, model_context(model)) if isinstance(inputs, list) else CHUNK
            feeds = sample_inputs(inputs, tok, bool(getattr(model.config, "is_encoder_decoder", False)), chunk, n)
            last, middle, mid, layers = states(model, feeds, tok, n)
            emb = model.get_input_embeddings().weight.detach()
            top = emb[torch.tensor(frequent_tokens(inputs, tok), device=emb.device)].float().cpu()
            vocab_distinct = distinct_rows(emb)
    finally:
        model.train(was_training)
    sample = {"tokens": last.shape[0], "forward_passes": len(feeds), "embedding_rows": top.shape[0],
              "middle_layer": mid, "layers": layers}  # fmt: skip
    embedding = {**spread(top), "distinct_rows": distinct_rows(top), "distinct_rows_vocab": vocab_distinct,
                 "vocab": emb.shape[0]}  # fmt: skip
    return {"sample": sample, "embedding": embedding, "last": spread(last), "middle": spread(middle)}


def spread(x: torch.Tensor) -> dict:
    """Mean cosine and effective rank of the rows of x."""
    return {"mean_cosine": mean_cosine(x), "effective_rank": effective_rank(x)}


def quantized_tensors(model: nn.Module) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(parameter name, parametrization, latent weight) of every quantized weight, once each (tied copies skipped)."""
    seen, out = set(), []
    for mod_name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            plist = module.parametrizations.weight
            if id(plist[0]) not in seen:
                seen.add(id(plist[0]))
                out.append((f"{mod_name}.weight" if mod_name else "weight", plist[0], plist.original))
    return out


@torch.no_grad()
def module_ranges(model: nn.Module) -> list[dict]:
    """Per quantized tensor: name, layer, module type, max|w|/mean|w| of the latent weight and, for a scheme with
    a learned range, clip/mean|w| and the learned value itself (`learned`, e.g. {'gamma': 3.1})."""
    out = []
    for name, p, latent in quantized_tensors(model):
        layer, module = module_of(name)
        stats = range_stats(latent)
        entry = {"name": name, "layer": layer, "module": module, "max_over_mean": stats["max_over_mean"]}
        if ".decoder." in f".{name}":  # an encoder-decoder's decoder: its layers count from 0 again
            entry["stack"] = "decoder"
        if hasattr(p, "learned_range"):
            r = p.learned_range(latent)
            entry |= {"clip_over_mean": r.pop("clip") / stats["mean_abs"], "learned": r}
        out.append(entry)
    return out


def with_init(ranges: list[dict], init: list[dict]) -> list[dict]:
    """ranges (end of training) with each tensor's clip_over_mean and learned values at quantization time
    (clip_over_mean_init, learned_init)."""
    first = {r["name"]: r for r in init}
    return [{**r, "clip_over_mean_init": first[r["name"]].get("clip_over_mean"),
             "learned_init": first[r["name"]].get("learned", {})} if "clip_over_mean" in r else r
            for r in ranges]  # fmt: skip


def range_moves(ranges: list[dict]) -> dict:
    """How far training moved each learned value (PACT α, LSQ s, MDS γ, LAQ's fitted α): per name, the median and
    the largest relative change |end / start - 1| over the tensors, and how many tensors have it. {} without
    learned ranges."""
    moves: dict[str, list[float]] = {}
    for r in ranges:
        start = r.get("learned_init") or {}
        for k, end in (r.get("learned") or {}).items():
            if start.get(k):
                moves.setdefault(k, []).append(abs(end / start[k] - 1))
    return {k: {"median": statistics.median(v), "max": max(v), "tensors": len(v)} for k, v in moves.items()}


def section(split: str, fp: dict, quantized: dict | None = None, ranges: list[dict] | None = None) -> dict:
    """The record's `diagnosis`: the sample (the same for both models), the FP model's measures and, for a quantized
    cell, the quantized model's, the module ranges and how far the learned ones moved (range_moves)."""
    fp, quantized = dict(fp), quantized and dict(quantized)
    sample = {"split": split, **fp.pop("sample")}
    if quantized is not None:
        quantized.pop("sample")
    if quantized is None:
        return {"sample": sample, "fp": fp}
    moves = range_moves(ranges or [])
    return {"sample": sample, "fp": fp, "quantized": quantized, "ranges": ranges, "range_moves": moves}
