"""Scheme base class: a small validated dataclass that turns one weight into a quantizing parametrization.

A concrete scheme (one file each: `linear.py`, `kmeans.py`, ...) implements `parametrization`, whose module also
implements the packing protocol (qbench.quant.packing.Packable): what it packs is also what its size is (side
tensors = overhead bits). `qbench.quant.wiring.quantize_model` attaches the parametrizations to a model.

Calibration protocol (data-aware schemes). A scheme that needs statistics of the task's data returns them from
`calibration()`: a `Calibration(stats, batches)`, e.g. `Calibration(("grad_sq",), batches=16)`. Before quantizing,
the pipeline measures them once, on the model as it is about to be quantized (pre-trained for order qat, the FP
fine-tune otherwise), over the first `batches` batches of the task's training split, with the task kind's own
collator (qbench.calibrate). Then `parametrization(weight, transposed, name=..., stats=...)` is called per tensor
with its parameter name and `stats`, {statistic: tensor} of that tensor:
- "grad_sq": like `weight`: the mean over the batches of the squared gradient of the task loss (diagonal Fisher);
- "inputs": (positions, in_features): the inputs of the Linear/Conv1D layer owning the weight (none for embeddings);
- "hessian": scheme=gptq's sequential pass (qbench.gptq_pass; its Hessians are measured while earlier layers are
  already quantized, so it is the quantization itself): {"gptq": that tensor's GPTQResult, "tokens": positions}.
A data-free scheme returns None from `calibration()` and receives stats=None. So a data-aware scheme is one file
(the dataclass and its parametrization), one yaml in conf/scheme/ and one test.

Per-tensor bits (mixed precision): `bits_by` maps fnmatch patterns on parameter names to bits; a weight takes the
bits of the first pattern matching one of its names, else `embed_bits` (nn.Embedding weights), else `bits`
(`for_tensor`). `only` (sensitivity cells, qbench.sensitivity): quantize only the selected weights matching one of
these patterns. Both are quantization-stage keys, so such cells share the cached FP fine-tune (unlike
model.include, which is part of the FP cache key).

`latent_trained`: whether fine-tuning still trains the latent weight once it is quantized (STE schemes) or only
the scheme's own parameters (k-means' codebook, False: the latent weight is frozen).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from qbench.errors import QbenchError

STATS = ("grad_sq", "inputs", "hessian")  # the statistics a scheme can ask for (see the module docstring)


@dataclass(frozen=True)
class Calibration:
    """What a data-aware scheme asks the pipeline to measure before quantizing (qbench.calibrate)."""

    stats: tuple[str, ...]  # of STATS
    batches: int = 8  # calibration batches: the first of the task's training split, in order

    def __post_init__(self) -> None:
        if not self.stats or set(self.stats) - set(STATS):
            raise QbenchError(f"calibration stats {self.stats!r}; valid: one or more of {', '.join(STATS)}")
        if not isinstance(self.batches, int) or self.batches < 1:
            raise QbenchError(f"calibration batches must be an integer >= 1, got {self.batches!r}")


@dataclass(frozen=True)
class Scheme:
    """Base: `bits` per weight, 1–8; `embed_bits` for nn.Embedding weights (None = bits); `act_bits` for the
    inputs of the quantized Linear/Conv1D layers (None = full precision; see qbench.quant.wiring); `bits_by`
    {pattern: bits}, first match wins over embed_bits and bits; `only`: quantize only weights matching these."""

    name: ClassVar[str] = "base"
    latent_trained: ClassVar[bool] = True  # False: fine-tuning trains only the scheme's parameters (k-means)
    bits: int
    embed_bits: int | None = None
    act_bits: int | None = None
    bits_by: Mapping[str, int] | None = None  # {fnmatch pattern on parameter names: bits}; first match wins
    only: Sequence[str] | None = None  # quantize only the selected weights matching one of these (None: all)

    def __post_init__(self) -> None:
        for key in ("bits", "embed_bits", "act_bits"):
            v = getattr(self, key)
            if key != "bits" and v is None:
                continue
            if not is_bits(v):
                raise QbenchError(f"scheme={self.name}: {key} must be an integer in 1..8, got {v!r}")
        # plain containers (Hydra passes DictConfig/ListConfig), kept in the order given: the first match wins
        object.__setattr__(self, "bits_by", dict(self.bits_by or {}))
        object.__setattr__(self, "only", list(self.only) if self.only is not None else None)
        self._check_bits_by()
        if self.only is not None and (not self.only or not all(isinstance(p, str) and p for p in self.only)):
            raise QbenchError(f"scheme.only={self.only!r}; valid: a non-empty list of fnmatch patterns (strings)")

    def _check_bits_by(self) -> None:
        """Patterns are non-empty strings; each value is valid as this scheme's `bits` (a scheme's own limits too,
        e.g. nf4's bits >= 2: checked by building the scheme at that many bits)."""
        for pattern, bits in self.bits_by.items():
            where = f"scheme.bits_by {pattern!r}: {bits!r}"
            if not isinstance(pattern, str) or not pattern:
                raise QbenchError(f"{where}: a pattern must be a non-empty string (fnmatch on parameter names)")
            if not is_bits(bits):
                raise QbenchError(f"{where}: bits must be an integer in 1..8")
            try:
                replace(self, bits=bits, embed_bits=None, bits_by=None, only=None)
            except QbenchError as e:
                raise QbenchError(f"{where}: {e}") from None

    def for_tensor(self, name: str, module: nn.Module, aliases: Sequence[str] = ()) -> Scheme:
        """The scheme applied to one weight: this one with the bits of the first `bits_by` pattern matching its
        parameter name (or a tied alias, e.g. lm_head.weight), else embed_bits for nn.Embedding weights, else bits."""
        names = (name, *aliases)
        bits = next((b for p, b in self.bits_by.items() if any(fnmatch.fnmatchcase(n, p) for n in names)), None)
        if bits is None:
            bits = self.embed_bits if isinstance(module, nn.Embedding) and self.embed_bits is not None else self.bits
        return self if bits == self.bits else replace(self, bits=bits)

    def quantizes(self, name: str, aliases: Sequence[str] = ()) -> bool:
        """Whether a selected weight is quantized: always, unless `only` is set and none of its names matches."""
        return self.only is None or any(fnmatch.fnmatchcase(n, p) for n in (name, *aliases) for p in self.only)

    @property
    def wea(self) -> str:
        """Weight-embedding-activation bits as paper B writes them, e.g. '2-2-8' (32 = full precision)."""
        return f"{self.bits}-{self.embed_bits or self.bits}-{self.act_bits or 32}"

    def train_callbacks(self) -> list:
        """transformers.TrainerCallback instances the scheme needs during fine-tuning (LAQ: optimizer state)."""
        return []

    def calibration(self) -> Calibration | None:
        """The statistics this scheme needs before quantizing (see the module docstring); None: data-free."""
        return None

    def parametrization(
        self, weight: torch.Tensor, transposed: bool, *, name: str = "", stats: Mapping[str, torch.Tensor] | None = None
    ) -> nn.Module:
        """Module mapping the latent weight to its quantized value (same shape). `transposed`: the weight is
        stored (in, out) as in GPT-2's Conv1D, so output units are its columns. `name`: the parameter's name;
        `stats`: this tensor's calibration statistics ({"grad_sq": like weight, "inputs": (positions, in)}) when
        `calibration()` asked for them, else None."""
        raise NotImplementedError

    def describe(self) -> dict:
        """The record's scheme settings; bits_by and only appear when set (records of other cells stay as they were)."""
        d = {k: v for k, v in asdict(self).items() if not (k in ("bits_by", "only") and not v)}
        return {"name": self.name, **d, "wea": self.wea}


@dataclass(frozen=True)
class NoQuant:
    """The full-precision baseline: nothing is quantized."""

    name: ClassVar[str] = "none"
    bits: None = None

    def describe(self) -> dict:
        return {"name": self.name, "bits": None}


def is_bits(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8


def as_2d(w: torch.Tensor, transposed: bool) -> torch.Tensor:
    """(rows = output units, cols) view of a weight: Linear (out, in) as is, Conv1D (in, out) transposed,
    Embedding (vocab, dim) as is."""
    w2d = w.reshape(w.shape[0], -1)
    return w2d.t() if transposed else w2d


def from_2d(q: torch.Tensor, shape: tuple[int, ...], transposed: bool) -> torch.Tensor:
    """as_2d's inverse: the weight of `shape` from q, its (rows, cols) view or that view's row-major values in any
    shape (a grouped (G, m) view, a flat vector)."""
    lead = shape[0]  # Linear/Embedding: rows; Conv1D (stored transposed): cols of the view
    q2d = q.reshape(-1, lead).t() if transposed else q.reshape(lead, -1)
    return q2d.reshape(shape)
