"""Shared base of the per-module scaled QAT quantizers (PACT, LSQ, LAQ, MDS: paper B, Tao et al. 2022).

A weight is quantized per tensor ("per module") to integer levels k in [-qn, qp] times one step:
    value = k * step,   k = round(clamp(w / step, -qn, qp))   (1 bit: k = sign(w), levels ±step)
Each scheme defines how `step` is obtained (a learned clip, a learned step, a curvature-weighted fit, a learned
multiple of mean|w|) and, through `grad_path`, which gradient reaches the latent weight and the learned scale.
The forward value is exactly `k * step` (computed from detached tensors), so a packed export (`packed_state`/
`unpack`) reproduces it bit for bit. In training the gradient comes from the scheme's `grads`, the same gradient as
grad_path's in closed form, in one autograd node (_FakeQuant: about 10 elementwise passes per weight where autograd
through grad_path takes some 30); `fused = False`, or a scheme without `grads`, adds `g - g.detach()` (zero) to the
value instead and lets autograd differentiate grad_path.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qbench.errors import QbenchError
from qbench.quant import primitives as P


def round_ste(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Value k (the rounded level), gradient 1 to u (straight-through estimator)."""
    return u + (k - u).detach()


INITS = ("mse", "minmax", "lsq")  # initial range of the learned-range schemes (PACT, LSQ, MDS)

# Log-steps of the pattern search in `fit_step`: a warm start sweeps ±1/16, ±1/64, ±1/256 (relative moves of
# 6 %, 1.6 %, 0.4 %) around the previous step, 7 error evaluations when nothing moves. A cold start first sweeps
# the coarser COLD_SCALES too, so its result has passed the warm sweep: a warm refit of unchanged (w, d) returns it
# unchanged (exports and evaluation reproduce the forward bit for bit).
WARM_SCALES = (1 / 16, 1 / 64, 1 / 256)
COLD_SCALES = (1 / 2, 1 / 8)
COLD_GRID = 16  # cold start: geometric grid of clip values from mean|w|/2 to max|w|
MAX_EVALS = 200  # safety cap on error evaluations per fit


def grid_error(w: torch.Tensor, step: float, qn: int, qp: int, d: torch.Tensor | None = None) -> float:
    """Σ d (w - step·k)², k = round(clamp(w/step, -qn, qp)) (ScaledFakeQuant's levels); w, d flat, d None = 1."""
    e = (w / step).clamp_(-qn, qp).round_().mul_(step).sub_(w).square_()  # one temporary like w
    return float(e.sum() if d is None else e @ d)


def fit_step(w: torch.Tensor, qn: int, qp: int, d: torch.Tensor | None = None, start: float | None = None) -> float:
    """Step s of the grid s·{-qn..qp} minimising grid_error, with qp·s <= max|w| (a clip beyond every weight only
    coarsens the grid; at qp·s = max|w| the grid is symmetric min-max, so the fit is never worse than min-max).

    Pattern search on log s, from `start` (warm) or from the best of a geometric grid of COLD_GRID clip values
    in [mean|w|/2, max|w|] (cold): try s·exp(±h) for h in the scales, coarse to fine; on a strict decrease move
    there, keep doubling h in that direction while it decreases, and restart the sweep; stop when a full sweep
    finds no decrease. w: any shape (flattened), d: like w or None."""
    w = w.detach().reshape(-1).float()
    d = None if d is None else d.detach().reshape(-1).float()
    amax = w.abs().max().item()
    if amax == 0:
        return 1e-8
    hi = amax / qp

    def err(s: float) -> float:
        return grid_error(w, s, qn, qp, d)

    if start is None:
        lo = min(w.abs().mean().item() / 2, amax) / qp
        grid = [lo * (hi / lo) ** (i / (COLD_GRID - 1)) for i in range(COLD_GRID - 1)] + [hi]  # hi exactly
        errs = [err(s) for s in grid]
        best = min(range(len(grid)), key=errs.__getitem__)
        return _pattern_search(err, grid[best], errs[best], hi, COLD_SCALES + WARM_SCALES)
    s0 = min(float(start), hi)
    return _pattern_search(err, s0, err(s0), hi, WARM_SCALES)


def _pattern_search(err, s: float, f: float, hi: float, scales: tuple[float, ...]) -> float:
    """Local minimum of err (a float function of the step) from s (err(s) = f), capped at hi; see fit_step."""
    evals, i = 0, 0
    while i < len(scales) and evals < MAX_EVALS:
        moved = False
        for sign in (1.0, -1.0):
            h = sign * scales[i]
            while evals < MAX_EVALS:
                cand = min(s * math.exp(h), hi)
                fc = err(cand) if cand != s else f
                evals += 1
                if not fc < f:
                    break
                s, f, moved, h = cand, fc, True, 2 * h  # accelerate along a descending direction
            if moved:
                break
        i = 0 if moved else i + 1
    return s


def check_init(init: str) -> None:
    if init not in INITS:
        raise QbenchError(f"scheme.init={init!r}; valid: {', '.join(INITS)}")


def init_step(w: torch.Tensor, bits: int, init: str, qn: int, qp: int) -> float:
    """Initial step of a learned-range quantizer with levels step·{-qn..qp} (1 bit: ±step):
    mse: fit_step (the least-squares step, clip <= max|w|; never worse than min-max); minmax: max|w|/qp;
    lsq: LSQ's 2·mean|w|/sqrt(qp) (as a clip 2·sqrt(n)·mean|w|: 18σ at 8 bits for Gaussian weights, beyond every
    weight of most tensors). 1 bit (binary, qn = qp = 1): mean|w|, the L2-optimal binary scale, for every init."""
    w = w.detach().float()
    if bits == 1 or init == "lsq":
        mean = w.abs().mean().item()
        return (mean if bits == 1 else 2 * mean / math.sqrt(qp)) or 1e-8
    if init == "minmax":
        return w.abs().max().item() / qp or 1e-8
    return fit_step(w, qn, qp)


def range_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every learned-range parameter of the model's quantizers (their `range_params`), once
    each: found by the quantizer modules that declare them, not by parameter names."""
    seen, out = set(), []
    for mod_name, module in model.named_modules():
        for attr in getattr(module, "range_params", ()):
            p = getattr(module, attr)
            if isinstance(p, nn.Parameter) and id(p) not in seen:
                seen.add(id(p))
                out.append((f"{mod_name}.{attr}" if mod_name else attr, p))
    return out


class _FakeQuant(torch.autograd.Function):
    """Forward k·step (ScaledFakeQuant.levels, bit for bit the unfused value); backward the scheme's `grads`. Saves
    the latent (no copy: a parameter), the step and the levels as int8 (bits <= 8: k in [-128, 127])."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, step: torch.Tensor, quant: ScaledFakeQuant) -> torch.Tensor:
        k = quant.levels(w, step)
        ctx.quant = quant
        ctx.save_for_backward(w, step.detach(), k.to(torch.int8))
        return (k * step.detach()).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        w, step, k = ctx.saved_tensors
        gw, gs = ctx.quant.grads(w, step, k.to(grad.dtype), grad)
        return gw, (None if gs is None else gs.to(step.dtype).reshape(step.shape)), None


class ScaledFakeQuant(nn.Module):
    """w -> k * step per tensor, with a scheme-specific gradient; implements the export protocol
    (qbench.quant.packing.Packable): codes = k + qn (1 bit: (k + 1) / 2), side tensors `step` and `levels`."""

    fused = True  # training runs `grads` (closed form) where the scheme has it; False: autograd of grad_path
    # names of this module's learned-range parameters (PACT α, LSQ s, MDS γ): `range_parameters` finds them, and
    # train.qat.quantizer_lr trains them in an optimizer group of their own (qbench.train)
    range_params: tuple[str, ...] = ()

    def __init__(self, bits: int, transposed: bool, qn: int | None = None, qp: int | None = None):
        super().__init__()
        self._bits, self.transposed = bits, transposed
        n = P.sym_levels(bits)
        self.qn, self.qp = (n if qn is None else qn), (n if qp is None else qp)
        self.binary = bits == 1 and self.qn == self.qp == 1

    # --- what a scheme defines ---
    def step(self, w: torch.Tensor) -> torch.Tensor:
        """The quantization step (0-d tensor), possibly with a gradient to a learned parameter."""
        raise NotImplementedError

    def grad_path(self, w: torch.Tensor, step: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """An expression whose gradient (w.r.t. w and the learned parameters) is the scheme's; its value is unused."""
        raise NotImplementedError

    def grads(self, w: torch.Tensor, step: torch.Tensor, k: torch.Tensor, grad: torch.Tensor):
        """Optional, for speed: (gradient to w, gradient to the step or None) of grad_path in closed form, from the
        upstream `grad`, the latent w, the step's value and the levels k (float). A scheme without it trains through
        autograd of grad_path (some 30 elementwise passes per weight instead of about 10); tests check that both
        give the same gradients."""
        raise NotImplementedError

    # --- shared ---
    def levels(self, w: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        u = w.detach() / step.detach()
        if self.binary:
            return P.sym_round(u, 1)
        return u.clamp_(-self.qn, self.qp).round_()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        step = self.step(w)
        if self.fused and type(self).grads is not ScaledFakeQuant.grads and torch.is_grad_enabled():
            return _FakeQuant.apply(w, step, self)
        k = self.levels(w, step)
        if not torch.is_grad_enabled() or not (w.requires_grad or step.requires_grad):
            return (k * step.detach()).to(w.dtype)  # evaluation: the value alone
        g = self.grad_path(w, step, k)
        return (k * step.detach()).to(w.dtype) + (g - g.detach())

    @property
    def bits(self) -> int:
        return self._bits

    def code_layout(self, latent: torch.Tensor) -> tuple[int, int]:
        """(1, integer levels) of packed_state's codes (qbench.quant.diagnostics): qn + qp + 1 (binary: 2)."""
        return 1, 2 if self.binary else self.qn + self.qp + 1

    def learned_range(self, latent: torch.Tensor) -> dict[str, float]:
        """The range at this point of training (qbench.diagnose): `clip`, the largest positive level (qp·step;
        binary: step), and the scheme's own learned value (`learned`)."""
        with torch.no_grad():
            step = float(self.step(latent.detach()))
        return {"clip": step * (1 if self.binary else self.qp), **self.learned(latent)}

    def learned(self, latent: torch.Tensor) -> dict[str, float]:
        """{name: value} of what the scheme learns about the range (PACT α, LSQ s, MDS γ, LAQ's fitted α)."""
        return {}

    def packed_state(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            step = self.step(latent.detach()).detach()
            k = self.levels(latent, step)
        mult, zero = (2, 1) if self.binary else (1, self.qn)
        codes = ((k + zero) / mult).round().long().reshape(-1)
        levels = torch.tensor([mult, zero], dtype=torch.float32)
        return {"codes": codes, "step": step.float().reshape(1), "levels": levels}

    @classmethod
    def unpack(cls, state: dict[str, torch.Tensor], info: dict) -> torch.Tensor:
        dtype = getattr(torch, info["dtype"])
        mult, zero = state["levels"].to(dtype)
        k = state["codes"].to(dtype) * mult - zero
        return (k * state["step"].to(dtype)[0]).to(dtype).reshape(info["shape"])
