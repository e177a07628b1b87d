"""K-means ('weight sharing') quantization as in Deep Compression / Zhao et al. 2020.

One codebook of 2^bits centroids per tensor. The assignment of each weight to a centroid is fixed after
clustering; during fine-tuning each centroid moves by the sum of its members' gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from qbench.errors import QbenchError
from qbench.quant.kmeans1d import INITS, kmeans_1d, kmeans_sklearn
from qbench.quant.schemes import Scheme

BACKENDS = ("qbench", "sklearn")


@dataclass(frozen=True)
class KMeans(Scheme):
    name: ClassVar[str] = "kmeans"
    latent_trained: ClassVar[bool] = False  # once clustered, only the codebook trains (Codebook ignores the latent)
    init: str = "linear"
    max_iter: int = 100
    backend: str = "qbench"
    seed: int = 0  # RNG seed of init=kmeans++; conf/scheme/kmeans.yaml sets it to the run's `seed`

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in INITS:
            raise QbenchError(f"scheme.init={self.init!r}; valid: {', '.join(INITS)}")
        if self.backend not in BACKENDS:
            raise QbenchError(f"scheme.backend={self.backend!r}; valid: {', '.join(BACKENDS)}")

    def cluster(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(centroids (k,), labels like weight) for this tensor."""
        k = 2**self.bits
        if self.backend == "sklearn":
            res = kmeans_sklearn(weight, k, self.init, self.max_iter, seed=self.seed)
        else:
            res = kmeans_1d(weight, k, self.init, self.max_iter, seed=self.seed)
        return res.centroids, res.labels.reshape(weight.shape)

    def parametrization(self, weight: torch.Tensor, transposed: bool, *, name: str = "", stats=None) -> nn.Module:
        centroids, labels = self.cluster(weight)
        return Codebook(centroids.to(weight.dtype), labels)


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

    def packed_state(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"codes": self.labels, "centroids": self.centroids.detach().float()}

    @classmethod
    def unpack(cls, state: dict[str, torch.Tensor], info: dict) -> torch.Tensor:
        return state["centroids"].to(getattr(torch, info["dtype"]))[state["codes"]].reshape(info["shape"])
