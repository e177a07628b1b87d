"""GPTQ (Frantar et al., 2022): quantize a layer's weight one column (input) at a time and push each column's rounding
error onto the columns not yet quantized, weighted by the inverse of the layer's input Hessian. Pure tensor math.

The layer computes y = W x with W (rows = outputs, cols = inputs); over calibration inputs X (cols, n) its output
error for a quantized Q is ||(W - Q) X||^2 = tr((W - Q) H (W - Q)^T) with H = X X^T (qbench uses H = X X^T / n; the
scale cancels everywhere, the paper's factor 2 too). Quantizing column j to q_j and moving the rest by
delta = -(w_j - q_j) / [H^-1]_jj * H^-1[j, :] is the optimal (OBS) correction of the remaining columns; after
column j, H^-1 becomes the inverse of H without row/column j. GPTQ's form of this (the paper's Algorithm 1):
- dead inputs (H[i, i] = 0: never active in the calibration data): H[i, i] = 1 and W[:, i] = 0;
- dampening: H += damp * mean(diag H) * I;
- U = the upper Cholesky factor of H^-1 (H^-1 = U^T U): row j of U, divided by U[j, j], is row j of the downdated
  inverse, so err_j = (w_j - q_j) / U[j, j] and W[:, k] -= err_j * U[j, k] for k > j;
- lazy batches: columns in blocks of block_size; inside a block the updates go to the block's own columns only, and
  the block's errors (rows, B) reach the later columns in one matrix product at its end;
- act_order: columns in the order of decreasing H[i, i] (the most active inputs first), then back.

Grids (one integer code per weight, same codes and side tensors as the data-free scheme of that grid, so the packed
bytes have its format):
- LinearGrid: 2^bits evenly spaced levels, asymmetric (min..max) or symmetric (qbench.quant.primitives.linear_qparams),
  per row or per group of group_size consecutive inputs. A group's scale and offset are fixed when the first of its
  columns is reached, from the current (error-updated) values of all its columns, none of which is quantized yet.
  With act_order the columns are visited in the permuted order but groups stay groups of consecutive original inputs
  (the packed layout of qbench's linear scheme, no group index): a group is fixed when its first column *in the
  permuted order* is reached. (The GPTQ reference code with act_order groups consecutive *permuted* columns instead,
  which needs a per-column group index in the packed format.) Without groups the row's range is its whole row at the
  start: with dead inputs zeroed, the same as round-to-nearest's.
- KMeansGrid: one codebook of 2^bits centroids per row, fitted before GPTQ by kmeans_1d_rows on the layer's weights
  (optionally with sample weights, e.g. the diagonal Fisher); GPTQ then rounds each weight to its row's nearest
  centroid (the 1-D case of GPTVQ).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qbench.quant import primitives as P
from qbench.quant.kmeans1d import kmeans_1d_rows


class LinearGrid:
    """Uniform grid per row (group_size None) or per group of group_size consecutive columns; params (rows, G)."""

    def __init__(self, rows: int, cols: int, bits: int, symmetric: bool, group_size: int | None):
        if group_size is not None and cols % group_size:
            raise ValueError(f"group_size={group_size} does not divide the row length {cols}")
        self.bits, self.symmetric, self.size = bits, symmetric, group_size or cols
        n = cols // self.size
        self.scale = torch.full((rows, n), float("nan"), dtype=torch.float64)  # (rows, G)
        self.offset = torch.full((rows, n), float("nan"), dtype=torch.float64)
        self.fixed = torch.zeros(n, dtype=torch.bool)

    def group(self, col: int) -> int:
        """The group of an (original) column."""
        return col // self.size

    def columns(self, g: int) -> range:
        """The (original) columns of group g."""
        return range(g * self.size, (g + 1) * self.size)

    def fix(self, g: int, values: torch.Tensor) -> None:
        """Set group g's scale and offset from the current values (rows, group_size) of its columns."""
        scale, offset = P.linear_qparams(values, self.bits, self.symmetric)  # (rows, 1) each
        self.scale[:, g], self.offset[:, g] = scale[:, 0], offset[:, 0]
        self.fixed[g] = True

    def quantize(self, col: int, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(quantized values, codes) of column `col`'s current values w (rows,); its group must be fixed."""
        g = self.group(col)
        scale, offset = self.scale[:, g : g + 1].to(w.dtype), self.offset[:, g : g + 1].to(w.dtype)  # (rows, 1)
        codes = P.linear_codes(w[:, None], scale, offset, self.bits)  # (rows, 1)
        return (offset + scale * codes)[:, 0], codes[:, 0]

    def state(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """The packed state of qbench's linear scheme (LinearFakeQuant.packed_state) for codes (rows, cols): codes
        in the grouped (rows * G, group_size) order, scale and offset (rows * G, 1) in float32."""
        return {"codes": codes.reshape(-1, self.size), "scale": self.scale.reshape(-1, 1).float(),
                "offset": self.offset.reshape(-1, 1).float()}  # fmt: skip


class KMeansGrid:
    """One codebook per row: centroids (rows, k); every group is the whole row and is fixed from the start."""

    def __init__(self, centroids: torch.Tensor):
        self.centroids = centroids.to(torch.float64)  # (rows, k)
        self.fixed = torch.ones(1, dtype=torch.bool)

    @classmethod
    def fit(cls, w: torch.Tensor, bits: int, weights: torch.Tensor | None = None, init: str = "linear",
            max_iter: int = 100, seed: int = 0, search: str = "lloyd") -> KMeansGrid:  # fmt: skip
        """Per-row k-means codebooks of w (rows, cols) (float32, as the kmeans_row scheme clusters), optionally with
        sample weights (rows, cols)."""
        res = kmeans_1d_rows(w.float(), 2**bits, init, max_iter, seed=seed, weights=weights, search=search)
        return cls(res.centroids)

    def group(self, col: int) -> int:
        return 0

    def columns(self, g: int) -> range:
        raise AssertionError("k-means codebooks are fitted before GPTQ starts")

    def fix(self, g: int, values: torch.Tensor) -> None:
        raise AssertionError("k-means codebooks are fitted before GPTQ starts")

    def quantize(self, col: int, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(nearest centroid of each row, its index) for the current values w (rows,) of a column."""
        c = self.centroids.to(w.dtype)
        codes = (w[:, None] - c).abs().argmin(1)  # (rows,); ties: the lower centroid
        return c.gather(1, codes[:, None])[:, 0], codes

    def state(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """The packed state of the kmeans_row scheme (GroupedCodebook.packed_state)."""
        return {"codes": codes.reshape(-1), "centroids": self.centroids.float()}


Grid = LinearGrid | KMeansGrid


@dataclass
class GPTQResult:
    q: torch.Tensor  # (rows, cols) in the computing dtype: the quantized weight, original column order
    codes: torch.Tensor  # (rows, cols) int64: its grid codes
    grid: Grid  # with its parameters fixed (scales / codebooks)
    stats: dict  # output errors tr(D H D^T) of GPTQ and of round-to-nearest on the same grid, and the signal


def gptq_quantize(w: torch.Tensor, h: torch.Tensor, grid: Grid, damp: float = 0.01, block_size: int = 128,
                  act_order: bool = False, dtype: torch.dtype = torch.float64) -> GPTQResult:  # fmt: skip
    """GPTQ of w (rows, cols) with the input Hessian h (cols, cols) on `grid` (see the module docstring). Computes
    in `dtype` (float64: the tests' exact comparisons; the GPTQ pass uses float32, as the reference code).
    stats: {"gptq_err", "rtn_err", "signal"} on the undampened h: tr(D h D^T) for D = W - Q, for D = W - RTN(W)
    (RTN: the same grid without error feedback, its parameters from the original weights) and tr(W h W^T)."""
    rows, cols = w.shape
    w0, h0 = w.detach().to(dtype), h.detach().to(dtype)
    W, H = w0.clone(), h0.clone()
    dead = torch.diagonal(H) == 0  # (cols,) inputs never active: their weights cannot matter on this data
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = torch.argsort(torch.diagonal(H), descending=True, stable=True) if act_order else torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]  # permuted order: position t holds original column perm[t]
    pos = torch.argsort(perm)  # (cols,): position of each original column
    H += damp * torch.diagonal(H).mean() * torch.eye(cols, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)  # H^-1 = U^T U
    Q, codes = torch.zeros_like(W), torch.zeros(rows, cols, dtype=torch.long)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1, E1 = W[:, i1:i2].clone(), torch.zeros(rows, i2 - i1, dtype=W.dtype)  # (rows, B): block, its errors
        for i in range(i2 - i1):
            j = int(perm[i1 + i])  # original column
            g = grid.group(j)
            if not grid.fixed[g]:  # first column of its group: none of the group is quantized yet
                grid.fix(g, _current(W, W1, E1, U, pos[list(grid.columns(g))], i1, i2))
            q, c = grid.quantize(j, W1[:, i])
            err = (W1[:, i] - q) / U[i1 + i, i1 + i]  # (rows,)
            W1[:, i:] -= err[:, None] * U[i1 + i, i1 + i : i2][None]  # the block's later columns
            E1[:, i], Q[:, i1 + i], codes[:, i1 + i] = err, q, c
        W[:, i2:] -= E1 @ U[i1:i2, i2:]  # lazy update: the block's errors reach the later columns at once
    Q, codes = Q[:, pos], codes[:, pos]  # original column order
    return GPTQResult(Q, codes, grid, output_errors(w0, Q, rtn(w0, grid), h0))


def _current(W, W1, E1, U, p: torch.Tensor, i1: int, i2: int) -> torch.Tensor:
    """Current values (rows, len(p)) of the not-yet-quantized columns at permuted positions p (all >= the current
    one): in the block, W1 (updated so far); after it, W minus the block's pending lazy update."""
    out = torch.empty(W.shape[0], len(p), dtype=W.dtype)
    inside = (p >= i1) & (p < i2)
    out[:, inside] = W1[:, p[inside] - i1]
    later = p[~inside]
    out[:, ~inside] = W[:, later] - E1 @ U[i1:i2, later]
    return out


def rtn(w: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Round-to-nearest of w (rows, cols) on a grid like `grid` (not changed): linear params from w itself, the same
    k-means codebooks."""
    if isinstance(grid, KMeansGrid):
        return torch.stack([grid.quantize(j, w[:, j])[0] for j in range(w.shape[1])], 1)
    g = P.grouped(w, "group", grid.size)  # (rows * G, size)
    scale, offset = P.linear_qparams(g, grid.bits, grid.symmetric)
    return (offset + scale * P.linear_codes(g, scale, offset, grid.bits)).reshape(w.shape)


def output_errors(w: torch.Tensor, q: torch.Tensor, r: torch.Tensor, h: torch.Tensor) -> dict[str, float]:
    """{gptq_err, rtn_err, signal}: tr(D h D^T) for D = w - q, w - r, and tr(w h w^T); all (rows, cols), h (cols, cols).
    With h = X X^T / n these are the mean over the n inputs of ||D x||^2."""
    quad = lambda d: float(((d @ h) * d).sum())  # noqa: E731  tr(d h d^T)
    return {"gptq_err": quad(w - q), "rtn_err": quad(w - r), "signal": quad(w)}
