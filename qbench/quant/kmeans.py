"""K-means ('weight sharing') quantization as in Deep Compression / Zhao et al. 2020.

One codebook of 2^bits centroids per tensor (granularity=tensor, paper A), per output unit (row) or per
`group_size` consecutive weights of a row (group). The assignment of each weight to a centroid is fixed after
clustering; during fine-tuning each centroid moves by the sum of its members' gradients.

Per-tensor codebooks use kmeans_1d (Lloyd with split-merge moves). Per-row and per-group codebooks cluster all
rows (groups) of a matrix in one batched call, kmeans_1d_rows: plain Lloyd from `init` with search=lloyd (the
per-row cells recorded before issue 27), a near-optimal per-row search with search=global (conf/scheme/kmeans_row
and kmeans_fisher set it; within ~1 % of each row's optimum, benchmarks/kmeans_rows_gap.py).

weighting=fisher (SqueezeLLM): each weight's squared error counts in proportion to its diagonal Fisher estimate,
the squared gradient of the task loss averaged over `calib_batches` training batches (qbench.calibrate), so the
centroids sit where the loss is most sensitive. Weights with zero Fisher still get the nearest centroid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from qbench.errors import QbenchError
from qbench.quant import primitives as P
from qbench.quant.kmeans1d import INITS, SEARCHES, kmeans_1d, kmeans_1d_rows, kmeans_sklearn
from qbench.quant.schemes import Calibration, Scheme, as_2d, from_2d

BACKENDS = ("qbench", "sklearn")
WEIGHTINGS = ("none", "fisher")  # sample weights of the clustering: none (paper A) | diagonal Fisher


@dataclass(frozen=True)
class KMeans(Scheme):
    name: ClassVar[str] = "kmeans"
    latent_trained: ClassVar[bool] = False  # once clustered, only the codebook trains (Codebook ignores the latent)
    init: str = "linear"
    max_iter: int = 100
    backend: str = "qbench"
    seed: int = 0  # RNG seed of init=kmeans++; conf/scheme/kmeans.yaml sets it to the run's `seed`
    granularity: str = "tensor"  # tensor (paper A) | row (per output unit) | group (group_size weights of a row)
    group_size: int = 128
    weighting: str = "none"  # none | fisher (SqueezeLLM: squared task-loss gradients as sample weights)
    calib_batches: int = 16  # weighting=fisher: training batches the Fisher estimate averages over
    search: str = "lloyd"  # lloyd (paper A: Lloyd from `init`) | global (near-optimal search, init unused)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in INITS:
            raise QbenchError(f"scheme.init={self.init!r}; valid: {', '.join(INITS)}")
        if self.backend not in BACKENDS:
            raise QbenchError(f"scheme.backend={self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.granularity not in P.GRANULARITIES:
            raise QbenchError(f"scheme.granularity={self.granularity!r}; valid: {', '.join(P.GRANULARITIES)}")
        if self.granularity == "group" and self.group_size < 2:
            raise QbenchError(f"scheme.group_size must be >= 2, got {self.group_size}")
        if self.granularity != "tensor" and self.backend != "qbench":
            raise QbenchError(f"scheme.backend={self.backend} clusters per tensor only; use backend=qbench with "
                              f"granularity={self.granularity}")  # fmt: skip
        if self.weighting not in WEIGHTINGS:
            raise QbenchError(f"scheme.weighting={self.weighting!r}; valid: {', '.join(WEIGHTINGS)}")
        if self.weighting == "fisher" and self.backend != "qbench":
            raise QbenchError("scheme.weighting=fisher needs backend=qbench (sklearn is the unweighted reference)")
        if self.search not in SEARCHES:
            raise QbenchError(f"scheme.search={self.search!r}; valid: {', '.join(SEARCHES)}")
        if self.search == "global" and self.backend != "qbench":
            raise QbenchError("scheme.search=global is a qbench solver: it needs backend=qbench")
        if not isinstance(self.calib_batches, int) or self.calib_batches < 1:
            raise QbenchError(f"scheme.calib_batches must be an integer >= 1, got {self.calib_batches!r}")

    def calibration(self) -> Calibration | None:
        """weighting=fisher: the squared gradients of the task loss over `calib_batches` batches."""
        return Calibration(("grad_sq",), self.calib_batches) if self.weighting == "fisher" else None

    def describe(self) -> dict:
        """As before granularity existed when it is `tensor` (records of paper A's k-means keep their scheme
        section); group_size only with granularity=group; weighting and calib_batches only with weighting=fisher."""
        d = super().describe()
        if self.granularity == "tensor":
            del d["granularity"]
        if self.granularity != "group":
            del d["group_size"]
        if self.weighting == "none":
            del d["weighting"], d["calib_batches"]
        if self.search == "lloyd":
            del d["search"]
        return d

    def cluster(self, weight: torch.Tensor, fisher: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(centroids (k,), labels like weight) for this tensor; `fisher` (like weight): sample weights."""
        k = 2**self.bits
        if self.backend == "sklearn":
            res = kmeans_sklearn(weight, k, self.init, self.max_iter, seed=self.seed)
        else:
            res = kmeans_1d(weight, k, self.init, self.max_iter, weights=fisher, seed=self.seed, search=self.search)
        return res.centroids, res.labels.reshape(weight.shape)

    def cluster_rows(self, g: torch.Tensor, fisher: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(centroids (G, k), labels (G, m)) of the rows of g (G, m), one codebook each, in one batched call;
        `fisher` (G, m): sample weights (a row whose weights are all zero is clustered unweighted)."""
        res = kmeans_1d_rows(g, 2**self.bits, self.init, self.max_iter, self.seed, fisher, search=self.search)
        return res.centroids, res.labels

    def parametrization(self, weight: torch.Tensor, transposed: bool, *, name: str = "", stats=None) -> nn.Module:
        fisher = self._fisher(weight, name, stats)
        if self.granularity == "tensor":
            centroids, labels = self.cluster(weight, fisher)
            return Codebook(centroids.to(weight.dtype), labels)
        w2d = as_2d(weight, transposed)
        if self.granularity == "group" and w2d.shape[1] % self.group_size:
            raise QbenchError(f"scheme.group_size={self.group_size} does not divide a row of length {w2d.shape[1]}"
                              f" ({name or 'a weight'}); choose a divisor or granularity=row")  # fmt: skip
        group = lambda t: P.grouped(as_2d(t, transposed), self.granularity, self.group_size)  # (G, m)
        centroids, labels = self.cluster_rows(group(weight), None if fisher is None else group(fisher))
        return GroupedCodebook(centroids.to(weight.dtype), labels, tuple(weight.shape), transposed)

    def _fisher(self, weight: torch.Tensor, name: str, stats) -> torch.Tensor | None:
        """The sample weights of this tensor: its calibration grad_sq with weighting=fisher, else None."""
        if self.weighting == "none":
            return None
        if not stats or "grad_sq" not in stats:
            raise QbenchError(f"scheme.weighting=fisher: no grad_sq statistics for {name or 'a weight'} (the "
                              "calibration stage measures them before quantizing; see qbench.calibrate)")  # fmt: skip
        g = stats["grad_sq"].detach().to("cpu", torch.float64)
        if g.shape != weight.shape or not torch.isfinite(g).all() or (g < 0).any():
            raise QbenchError(f"grad_sq of {name or 'a weight'}: expected finite, non-negative, shape "
                              f"{tuple(weight.shape)}")  # fmt: skip
        return g


class _Gather(torch.autograd.Function):
    """centroids[labels]; backward sums each centroid's gradient over its members with one index_add_ pass.
    (F.embedding's backward does the same sum ~30x slower on CPU for a 4-row table and MiniLM's 11.7M word-embedding
    indices.) On CUDA, index_add_ may sum in a nondeterministic order (PyTorch's reproducibility notes)."""

    @staticmethod
    def forward(ctx, centroids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(labels)
        ctx.k = centroids.numel()
        return F.embedding(labels, centroids[:, None]).reshape(labels.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (labels,) = ctx.saved_tensors
        sums = grad.new_zeros(ctx.k).index_add_(0, labels.reshape(-1), grad.reshape(-1))  # int32 index is supported
        return sums, None


class Codebook(nn.Module):
    """Quantized weight = centroids[labels]; the latent weight is ignored (and frozen) once clustered."""

    def __init__(self, centroids: torch.Tensor, labels: torch.Tensor):
        super().__init__()
        self.centroids = nn.Parameter(centroids.clone())  # (k,)
        self.register_buffer("labels", labels.to(torch.int32))  # weight's shape; int32 halves int64's memory

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        # gathers; backwards, the gradients of all weights sharing a centroid are summed
        return _Gather.apply(self.centroids, self.labels)

    # export hooks (qbench.quant.packing.Packable): codes = labels, codebook = centroids
    @property
    def bits(self) -> int:
        return max(1, (self.centroids.numel() - 1).bit_length())

    def code_layout(self, latent: torch.Tensor) -> tuple[int, int]:
        """(codebooks, entries per codebook) of packed_state's codes (qbench.quant.diagnostics): one codebook."""
        return 1, self.centroids.numel()

    def packed_state(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"codes": self.labels, "centroids": self.centroids.detach().float()}

    @classmethod
    def unpack(cls, state: dict[str, torch.Tensor], info: dict) -> torch.Tensor:
        return state["centroids"].to(getattr(torch, info["dtype"]))[state["codes"]].reshape(info["shape"])


class GroupedCodebook(nn.Module):
    """One codebook per row or group: quantized weight = centroids[group, labels] in the grouped (G, m) view of the
    (rows = output units, cols) matrix; labels fixed, centroids (G, k) trained by their members' gradients."""

    def __init__(self, centroids: torch.Tensor, labels: torch.Tensor, shape: tuple[int, ...], transposed: bool):
        super().__init__()
        g, k = centroids.shape
        self.shape, self.transposed = shape, transposed
        self.centroids = nn.Parameter(centroids.clone())  # (G, k)
        # flat index into centroids.reshape(-1): labels + k * group, (G, m) int32 (one buffer, no per-step offsets)
        index = labels.to(torch.int64) + k * torch.arange(g)[:, None]
        self.register_buffer("index", index.to(torch.int32 if g * k < 2**31 else torch.int64))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        q = _Gather.apply(self.centroids.reshape(-1), self.index)  # (G, m); backward: per-centroid sums
        return from_2d(q, self.shape, self.transposed)

    # export hooks (qbench.quant.packing.Packable): codes = labels in grouped (G, m) order, codebooks = centroids
    @property
    def bits(self) -> int:
        return max(1, (self.centroids.shape[1] - 1).bit_length())

    def code_layout(self, latent: torch.Tensor) -> tuple[int, int]:
        """(codebooks, entries per codebook) of packed_state's codes, contiguous per codebook (diagnostics)."""
        return tuple(self.centroids.shape)

    def packed_state(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        g, k = self.centroids.shape
        labels = self.index.to(torch.int64) - k * torch.arange(g)[:, None]
        return {"codes": labels.reshape(-1), "centroids": self.centroids.detach().float()}

    @classmethod
    def unpack(cls, state: dict[str, torch.Tensor], info: dict) -> torch.Tensor:
        c = state["centroids"].to(getattr(torch, info["dtype"]))  # (G, k)
        g, k = c.shape
        q = c.reshape(-1)[state["codes"].reshape(g, -1) + k * torch.arange(g)[:, None]]  # (G, m)
        return from_2d(q, tuple(info["shape"]), info["transposed"])
