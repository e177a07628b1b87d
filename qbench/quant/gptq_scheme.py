"""scheme=gptq: GPTQ's error feedback (qbench.quant.gptq) on a linear or a per-row k-means grid, post-training.

Its calibration statistic "hessian" is the whole GPTQ pass (qbench.gptq_pass): blocks in order, each layer's input
Hessian measured on the model whose earlier blocks are already quantized, then GPTQ. What reaches
`parametrization` is that layer's result (stats["gptq"], a GPTQResult); the module built from it holds the codes and
grid parameters and packs exactly as the grid's own scheme does: LinearGrid as scheme=linear (codes, scale,
offset, one pair per row or group), KMeansGrid as scheme=kmeans granularity=row (qbench.quant.kmeans.GroupedCodebook,
the same class).

Calibration: the first `calib_batches` batches of the task's training split (train.batch_size sequences each; for
causal LMs blocks of train.max_length tokens, seeded by the run's seed, see qbench.kinds.causal_lm), as every
calibrating scheme reads them (qbench.calibrate). Embeddings have no input Hessian: their rows are rounded to the
nearest level of the grid (GPTQ with H = identity, which is round-to-nearest). A tied LM head (GPT-2, SmolLM2) is
the embedding's tensor and is quantized with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from qbench.errors import QbenchError
from qbench.quant.gptq import GPTQResult, KMeansGrid, LinearGrid
from qbench.quant.kmeans import GroupedCodebook
from qbench.quant.kmeans1d import INITS, SEARCHES
from qbench.quant.linear import LinearFakeQuant
from qbench.quant.schemes import Calibration, Scheme, as_2d

GRIDS = ("linear", "kmeans")
WEIGHTINGS = ("none", "fisher")


@dataclass(frozen=True)
class GPTQ(Scheme):
    """GPTQ post-training quantization; see the module docstring and conf/scheme/gptq.yaml."""

    name: ClassVar[str] = "gptq"
    latent_trained: ClassVar[bool] = False  # the result is fixed codes; nothing trains the latent weight
    grid: str = "linear"  # linear | kmeans (one codebook per row)
    symmetric: bool = False  # grid=linear: ±max|w| levels (zero exact) instead of min..max
    group_size: int | None = None  # grid=linear: one scale per group of this many inputs; None: per row
    damp: float = 0.01  # H += damp * mean(diag H) * I
    block_size: int = 128  # columns per lazy batch update
    act_order: bool = False  # columns by decreasing H[i, i]
    calib_batches: int = 32  # training batches of train.batch_size the Hessians (and Fisher) average over
    weighting: str = "none"  # grid=kmeans: none | fisher (squared task-loss gradients as the codebook's weights)
    init: str = "linear"  # grid=kmeans, search=lloyd: kmeans_1d_rows' initialisation
    search: str = "global"  # grid=kmeans: kmeans_1d_rows' solver, as kmeans_row (global: near-optimal per row)
    max_iter: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.grid not in GRIDS:
            raise QbenchError(f"scheme.grid={self.grid!r}; valid: {', '.join(GRIDS)}")
        if self.group_size is not None and (not isinstance(self.group_size, int) or self.group_size < 2):
            raise QbenchError(f"scheme.group_size must be an integer >= 2 or null (per row), got {self.group_size!r}")
        if self.grid == "kmeans" and (self.group_size is not None or self.symmetric):
            raise QbenchError("scheme.grid=kmeans fits one codebook per row: group_size must be null, symmetric false")
        if not (isinstance(self.damp, int | float) and self.damp > 0):
            raise QbenchError(f"scheme.damp must be > 0, got {self.damp!r}")
        if not isinstance(self.block_size, int) or self.block_size < 1:
            raise QbenchError(f"scheme.block_size must be an integer >= 1, got {self.block_size!r}")
        if not isinstance(self.calib_batches, int) or self.calib_batches < 1:
            raise QbenchError(f"scheme.calib_batches must be an integer >= 1, got {self.calib_batches!r}")
        if self.weighting not in WEIGHTINGS:
            raise QbenchError(f"scheme.weighting={self.weighting!r}; valid: {', '.join(WEIGHTINGS)}")
        if self.weighting == "fisher" and self.grid != "kmeans":
            raise QbenchError("scheme.weighting=fisher weights k-means codebooks: it needs grid=kmeans")
        if self.init not in INITS:
            raise QbenchError(f"scheme.init={self.init!r}; valid: {', '.join(INITS)}")
        if self.search not in SEARCHES:
            raise QbenchError(f"scheme.search={self.search!r}; valid: {', '.join(SEARCHES)}")
        if self.act_bits is not None:
            raise QbenchError("scheme=gptq quantizes weights only: act_bits must be null")

    def calibration(self) -> Calibration:
        """The GPTQ pass ("hessian"), after the diagonal Fisher with weighting=fisher."""
        return Calibration(("grad_sq", "hessian") if self.weighting == "fisher" else ("hessian",), self.calib_batches)

    def make_grid(self, w2d: torch.Tensor, fisher: torch.Tensor | None = None) -> LinearGrid | KMeansGrid:
        """A fresh grid for w2d (rows, cols); k-means codebooks are fitted here (fisher (rows, cols): weights)."""
        rows, cols = w2d.shape
        if self.grid == "kmeans":
            return KMeansGrid.fit(w2d, self.bits, fisher, self.init, self.max_iter, self.seed, self.search)
        if self.group_size is not None and cols % self.group_size:
            raise QbenchError(f"scheme.group_size={self.group_size} does not divide a row of length {cols}; choose a "
                              "divisor or group_size=null (per row)")  # fmt: skip
        return LinearGrid(rows, cols, self.bits, self.symmetric, self.group_size)

    def describe(self) -> dict:
        d = super().describe()
        if self.grid == "linear":
            del d["weighting"], d["init"], d["search"], d["max_iter"], d["seed"]
        else:
            del d["symmetric"], d["group_size"]
        return d

    def parametrization(self, weight: torch.Tensor, transposed: bool, *, name: str = "", stats=None) -> nn.Module:
        result: GPTQResult | None = (stats or {}).get("gptq")
        if result is None:
            raise QbenchError(f"scheme=gptq: no GPTQ result for {name or 'a weight'} (the calibration stage runs the "
                              "GPTQ pass before quantizing; see qbench.gptq_pass)")  # fmt: skip
        if tuple(result.q.shape) != tuple(as_2d(weight, transposed).shape):
            raise QbenchError(f"scheme=gptq: the GPTQ result of {name} has shape {tuple(result.q.shape)}")
        state = result.grid.state(result.codes)
        if isinstance(result.grid, KMeansGrid):
            c = state["centroids"].to(weight.dtype)
            return GroupedCodebook(c, state["codes"].reshape(c.shape[0], -1), tuple(weight.shape), transposed)
        return GridCodes(state, self.bits, self.symmetric, tuple(weight.shape), transposed)


class GridCodes(nn.Module):
    """A weight fixed on a linear grid: offset + scale * codes in the grouped (G, m) view of its (rows, cols) matrix,
    packed as scheme=linear packs (LinearFakeQuant.packed_state / unpack); the latent weight is ignored."""

    def __init__(self, state: dict[str, torch.Tensor], bits: int, symmetric: bool, shape: tuple[int, ...],
                 transposed: bool):  # fmt: skip
        super().__init__()
        self.nbits, self.symmetric, self.shape, self.transposed = bits, symmetric, shape, transposed
        self.register_buffer("codes", state["codes"].to(torch.uint8 if bits <= 8 else torch.int32))  # (G, m)
        self.register_buffer("scale", state["scale"].float())  # (G, 1)
        self.register_buffer("offset", state["offset"].float())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.unpack(self.packed_state(w), {"dtype": str(w.dtype).removeprefix("torch."), "shape": self.shape,
                                                  "transposed": self.transposed})  # fmt: skip

    @property
    def bits(self) -> int:
        return self.nbits

    def code_layout(self, latent: torch.Tensor) -> tuple[int, int]:
        """(groups, integer levels), as LinearFakeQuant.code_layout."""
        levels = 2**self.nbits if not self.symmetric or self.nbits == 1 else 2**self.nbits - 1
        return self.scale.shape[0], levels

    def packed_state(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"codes": self.codes.long(), "scale": self.scale, "offset": self.offset}

    @classmethod
    def unpack(cls, state: dict[str, torch.Tensor], info: dict) -> torch.Tensor:
        return LinearFakeQuant.unpack(state, info)
