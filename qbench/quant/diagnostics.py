"""Codebook diagnostics of a quantized tensor (pure tensor math) and their summary over a model.

A quantized tensor's codes (its packed_state's "codes") index `codebooks` codebooks of `entries` entries each: one
k-means codebook per tensor, row or group; the shared NF4 table; the integer levels of a linear or scaled QAT grid
(per tensor, row or group). A parametrization says how through `code_layout(latent) -> (codebooks, entries)`, its
codes being contiguous per codebook; without it: one codebook of 2^bits entries.

Per tensor (one pass over the codes, the weight and its quantized value): entries in use and dead (never used),
usage entropy in bits (mean over its codebooks), SQNR in dB of the quantized vs the latent weight, and rows
(output units) collapsed to one value although the latent row is not constant. `pathologies` flags tensors with
dead entries or collapsed rows.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qbench.quant.schemes import as_2d


def code_layout(p: nn.Module, latent: torch.Tensor, bits: int) -> tuple[int, int]:
    """(codebooks, entries per codebook) of parametrization p's packed codes."""
    f = getattr(p, "code_layout", None)
    return tuple(f(latent)) if f is not None else (1, 2**bits)


def usage(codes: torch.Tensor, codebooks: int, entries: int) -> dict:
    """Entry usage of codes (numel = codebooks * m, contiguous per codebook, values in [0, entries))."""
    c = codes.reshape(codebooks, -1).long()  # (G, m)
    idx = c + entries * torch.arange(codebooks)[:, None] if codebooks > 1 else c
    counts = torch.bincount(idx.reshape(-1), minlength=codebooks * entries).reshape(codebooks, entries)  # (G, E)
    used = (counts > 0).sum(1)  # (G,)
    p = counts.double() / counts.sum(1, keepdim=True).clamp_min(1)
    entropy = -(p * torch.where(p > 0, p.log2(), torch.zeros_like(p))).sum(1)  # (G,) bits
    return {
        "codebooks": codebooks,
        "entries": entries,
        "entries_used": int(used.sum()),
        "dead_entries": int(codebooks * entries - used.sum()),
        "codebooks_with_dead": int((used < entries).sum()),
        "min_entries_used": int(used.min()),
        "entropy_bits": float(entropy.mean()),
    }


def collapsed_rows(w: torch.Tensor, wq: torch.Tensor, transposed: bool) -> int:
    """Rows (output units) whose quantized values are all equal while the latent row's are not."""
    lo, hi = torch.aminmax(as_2d(wq.detach(), transposed), dim=1)  # (rows,)
    wlo, whi = torch.aminmax(as_2d(w.detach(), transposed), dim=1)
    return int(((lo == hi) & (wlo != whi)).sum())


def signal_noise(w: torch.Tensor, wq: torch.Tensor) -> tuple[float, float]:
    """(|w|², |w - wq|²) in float64."""
    w64 = w.detach().double()
    return float(w64.pow(2).sum()), float((w64 - wq.detach().double()).pow(2).sum())


def db(signal: float, noise: float) -> float:
    """10·log10(signal / noise); inf when noise is 0 (as primitives.sqnr_db)."""
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def tensor_diagnostics(
    name: str, codes: torch.Tensor, layout: tuple[int, int], w: torch.Tensor, wq: torch.Tensor, transposed: bool
) -> dict:
    """One tensor's diagnostics (see the module docstring); `signal` and `noise` feed the model's SQNR."""
    signal, noise = signal_noise(w, wq)
    return {
        "name": name,
        **usage(codes, *layout),
        "sqnr_db": db(signal, noise),
        "rows": as_2d(w, transposed).shape[0],
        "collapsed_rows": collapsed_rows(w, wq, transposed),
        "signal": signal,
        "noise": noise,
        "numel": w.numel(),
    }


def summarise(tensors: list[dict]) -> dict:
    """The record's `diagnostics`: per tensor, over the model, and the pathologies."""
    n = sum(t["numel"] for t in tensors)
    signal, noise = sum(t["signal"] for t in tensors), sum(t["noise"] for t in tensors)
    entries = sum(t["codebooks"] * t["entries"] for t in tensors)
    dead = sum(t["dead_entries"] for t in tensors)
    pathologies = []
    for t in tensors:
        if t["dead_entries"]:
            pathologies.append({"tensor": t["name"], "issue": "dead_entries", "count": t["dead_entries"],
                                "codebooks": t["codebooks_with_dead"]})  # fmt: skip
        if t["collapsed_rows"]:
            pathologies.append({"tensor": t["name"], "issue": "collapsed_rows", "count": t["collapsed_rows"]})
    keep = ("name", "codebooks", "entries", "entries_used", "dead_entries", "codebooks_with_dead", "min_entries_used",
            "entropy_bits", "sqnr_db", "rows", "collapsed_rows")  # fmt: skip
    return {
        "summary": {
            "tensors": len(tensors),
            "entries": entries,
            "entries_used": entries - dead,
            "dead_entries": dead,
            "dead_share": dead / entries if entries else 0.0,
            "tensors_with_dead_entries": sum(1 for t in tensors if t["dead_entries"]),
            "entropy_bits": sum(t["entropy_bits"] * t["numel"] for t in tensors) / n if n else None,  # weight-mean
            "sqnr_db": db(signal, noise),  # of all quantized weights together
            "min_sqnr_db": min((t["sqnr_db"] for t in tensors), default=None),
            "collapsed_rows": sum(t["collapsed_rows"] for t in tensors),
        },
        "pathologies": pathologies,
        "tensors": [{k: t[k] for k in keep} for t in tensors],
    }
