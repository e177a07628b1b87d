"""Distillation for quantization-aware training (paper B, Tao et al. 2022): `distill=kd | tcd | kd_tcd`.

The teacher is the full-precision model fine-tuned on the same task, from the FP cache (qbench.fp_cache: fine-tuned
once there if missing; never per cell; the pipeline hands it over), in eval mode without gradients.
loss = task_weight · task + kd_weight · kd + tcd_weight · tcd, where
- kd: logit distillation, KL(softmax(t/T) ‖ softmax(s/T)) times T², averaged over examples (language models: over
  the non-padding tokens); 0 when the student matches the teacher; regression heads (one output): mean squared error;
- tcd: token-level contrastive distillation, InfoNCE with temperature τ: for each non-padding token of the student,
  the teacher's representation of the same token (same sequence, same position) is the positive, the teacher's
  other tokens of the batch (`in_batch`) and a FIFO memory bank of past teacher tokens (`bank_size`) are the
  negatives; states of hidden layer `layer` (decoder states for encoder-decoder models), L2-normalised, the
  student's optionally through a trained linear `projection`.
The teacher's outputs are read from a per-example cache computed once (qbench.teacher_cache) unless
`cache_teacher=false`. Each component is logged (loss_task, loss_kd, loss_tcd) and its mean over training goes to
the record (training.qat.loss_components).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer

from qbench.errors import QbenchError
from qbench.teacher_cache import (
    META,
    ROW,
    TeacherStates,
    build,
    entry_dir,
    hidden,
    inputs_digest,
    place,
    teacher_states,
    token_mask,
    weights_digest,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillSpec:
    name: str = "none"
    task_weight: float = 1.0
    kd_weight: float = 0.0
    tcd_weight: float = 0.0
    temperature: float = 1.0
    tau: float = 0.1
    layer: int = -1
    in_batch: bool = True
    bank_size: int = 0
    projection: bool = False
    cache_teacher: bool = True  # the teacher's outputs from qbench.teacher_cache (float16 states), not recomputed

    def __post_init__(self) -> None:
        for k in ("task_weight", "kd_weight", "tcd_weight", "bank_size"):
            if getattr(self, k) < 0:
                raise QbenchError(f"distill.{k} must be >= 0, got {getattr(self, k)!r}")
        if not (self.temperature > 0 and self.tau > 0):
            raise QbenchError("distill.temperature and distill.tau must be > 0")
        if self.tcd_weight and not self.in_batch and not self.bank_size:
            raise QbenchError("distill: tcd needs negatives: in_batch=true or bank_size > 0")

    @classmethod
    def from_config(cls, cfg) -> DistillSpec:
        d = dict(cfg or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise QbenchError(f"distill: unknown key(s) {sorted(unknown)}")
        return cls(**d)

    @property
    def active(self) -> bool:
        return bool(self.kd_weight or self.tcd_weight)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0, mask=None) -> torch.Tensor:
    """T² · mean KL(teacher ‖ student) of the tempered distributions over the last dimension; `mask` (like logits
    without the class dimension) selects the scored rows (tokens). One output (regression): mean squared error.

    KL, not the soft cross-entropy: the two differ by the teacher's entropy, a constant, so the gradient is the
    same, but KL is 0 when the student matches the teacher and the logged loss_kd says how far it is."""
    if mask is not None:
        student, teacher = student[mask.bool()], teacher[mask.bool()]
    if student.shape[-1] == 1:
        return F.mse_loss(student, teacher.detach())
    t = temperature
    log_p = F.log_softmax(teacher.detach() / t, -1)  # (rows, classes): teacher, log-probabilities
    log_q = F.log_softmax(student / t, -1)  # (rows, classes): student
    kl = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)  # (rows,): Σ p·(log p − log q)
    return kl.mean() * t * t


def tcd_loss(student: torch.Tensor, teacher: torch.Tensor, mask=None, tau: float = 0.1, bank=None,
             in_batch: bool = True) -> torch.Tensor:  # fmt: skip
    """InfoNCE over tokens: student (..., d) and teacher (..., d) states of the same tokens, `mask` (...) selects
    the non-padding ones. Row i: logits z_s[i]·z_t[j]/τ over j = the batch's teacher tokens (only j = i, the
    positive, when not in_batch) then the `bank` rows (already normalised teacher tokens); cross-entropy with
    target i, mean over the student tokens."""
    d = student.shape[-1]
    if mask is not None:
        student, teacher = student[mask.bool()], teacher[mask.bool()]
    zs = F.normalize(student.reshape(-1, d), dim=-1)
    zt = F.normalize(teacher.detach().reshape(-1, d), dim=-1)
    if in_batch:
        logits, target = zs @ zt.t(), torch.arange(len(zs), device=zs.device)
    else:
        logits, target = (zs * zt).sum(-1, keepdim=True), torch.zeros(len(zs), dtype=torch.long, device=zs.device)
    if bank is not None and len(bank):
        logits = torch.cat([logits, zs @ bank.t()], 1)
    return F.cross_entropy(logits / tau, target)


PROJECTION = "qbench_tcd_projection"  # the student's attribute holding TCD's projection during train()


def with_rows(collate):
    """The collator, passing each example's ROW through as a (batch,) tensor."""

    def collate_rows(features: list[dict]) -> dict:
        batch = collate([{k: v for k, v in f.items() if k != ROW} for f in features])
        return {**batch, ROW: torch.tensor([f[ROW] for f in features])}

    return collate_rows


class DistillTrainer(Trainer):
    """HF Trainer whose loss is task_weight·task + kd_weight·kd + tcd_weight·tcd against a frozen teacher.
    `teacher_cache`: the teacher's FP cache entry, whose outputs are then cached per training example
    (qbench.teacher_cache); None: the teacher runs on every batch."""

    def __init__(self, *args, teacher: nn.Module, spec: DistillSpec, teacher_cache: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # our loss is a per-batch mean: let the Trainer scale it
        self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
        self.spec, self.bank = spec, None
        self.proj = self._attach_projection() if spec.projection and spec.tcd_weight else None
        self._window, self._total = defaultdict(float), defaultdict(float)
        self._n_window = self._n_total = 0
        self.cache_key, self.states, self._collate = teacher_cache, None, self.data_collator
        if teacher_cache is not None:  # each example carries its row, the key into the cache
            self.train_dataset = self.train_dataset.add_column(ROW, list(range(len(self.train_dataset))))
            self.data_collator = with_rows(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()  # the model's arguments: the columns Trainer keeps
        if self.cache_key is not None and ROW not in self._signature_columns:
            self._signature_columns.append(ROW)

    def teacher_states(self) -> TeacherStates:
        """The cache entry of the teacher on this training set: loaded, or built once (qbench.teacher_cache)."""
        ds = self._remove_unused_columns(self.train_dataset).remove_columns(ROW)  # the model's inputs
        path = entry_dir(
            self.cache_key, self.spec.layer, inputs_digest(ds, ds.column_names), weights_digest(self.teacher)
        )
        built, a = not (path / META).is_file(), self.args
        states = teacher_states(path, lambda tmp: build(tmp, self.teacher, ds, self._collate, self.spec.layer,
                                                        a.per_device_eval_batch_size, a.device))  # fmt: skip
        log.info("teacher outputs %s the cache: %s", "written to" if built else "read from", path)
        return states

    def _attach_projection(self) -> nn.Linear:
        """TCD's linear map student hidden -> teacher hidden, registered as a submodule of the student for the
        length of train(): the Trainer's optimizer, zero_grad, gradient clipping and device moves then treat it as
        any other parameter (it is not in the student's forward pass). train() removes it again, so it is never
        exported, packed, evaluated or counted."""
        dims = (self.model.config.get_text_config().hidden_size, self.teacher.config.get_text_config().hidden_size)
        proj = nn.Linear(*dims).to(self.args.device)
        self.model.add_module(PROJECTION, proj)
        return proj

    def train(self, *args, **kwargs):
        if self.cache_key is not None and self.states is None:
            self.states = self.teacher_states()
        try:
            return super().train(*args, **kwargs)
        finally:  # the projection only serves the TCD loss: the trained student leaves without it
            if self.proj is not None and hasattr(self.model, PROJECTION):
                delattr(self.model, PROJECTION)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        s, rows = self.spec, inputs.pop(ROW, None)
        out = model(**inputs, output_hidden_states=bool(s.tcd_weight))
        mask = token_mask(model, inputs)
        t_logits, ht = self.teacher_outputs(inputs, rows, mask)
        parts = {"task": out.loss}
        if s.kd_weight:
            parts["kd"] = kd_loss(out.logits, t_logits, s.temperature, mask if out.logits.dim() == 3 else None)
        if s.tcd_weight:
            hs = hidden(out, s.layer)
            hs = self.proj(hs) if self.proj is not None else hs
            parts["tcd"] = tcd_loss(hs, ht, mask, s.tau, self.bank, s.in_batch)
            if s.bank_size:
                zt = F.normalize((ht[mask.bool()] if mask is not None else ht).reshape(-1, ht.shape[-1]), dim=-1)
                self.bank = torch.cat([zt.detach(), self.bank])[: s.bank_size] if self.bank is not None else zt[
                    : s.bank_size].detach()  # fmt: skip
        weights = {"task": s.task_weight, "kd": s.kd_weight, "tcd": s.tcd_weight}
        loss = sum(weights[k] * v for k, v in parts.items())
        if model.training:
            for k, v in parts.items():
                x = v.detach().item()
                self._window[k] += x
                self._total[k] += x
            self._n_window += 1
            self._n_total += 1
        return (loss, out) if return_outputs else loss

    def teacher_outputs(self, inputs: dict, rows: torch.Tensor | None, mask: torch.Tensor | None):
        """(logits if kd, states of `layer` if tcd; else None) of the teacher for this batch: from the cache when
        the batch carries its rows, else by running the teacher."""
        s = self.spec
        if self.states is None or rows is None:
            with torch.no_grad():
                t = self.teacher(**inputs, output_hidden_states=bool(s.tcd_weight))
            return (t.logits if s.kd_weight else None), (hidden(t, s.layer) if s.tcd_weight else None)
        dev, shape = self.args.device, (mask if mask is not None else inputs["input_ids"]).shape  # (batch, length)
        logits = states = None
        if s.kd_weight and "logits" in self.states.arrays:  # one vector per example (classification)
            logits = self.states.logits(rows).to(dev)
        elif s.kd_weight:  # per token: the teacher's output layer of its cached input, at the scored tokens only
            with torch.no_grad():
                logits = place(self.teacher.get_output_embeddings()(self.states.tokens("head", rows).to(dev)), mask,
                               shape)  # fmt: skip
        if s.tcd_weight:
            states = place(self.states.tokens("hidden", rows).to(dev), mask, shape)
        return logits, states

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._n_window:
            logs.update({f"loss_{k}": v / self._n_window for k, v in self._window.items()})
            self._window.clear()
            self._n_window = 0
        super().log(logs, start_time)

    @property
    def loss_components(self) -> dict[str, float]:
        """Mean of each loss component (unweighted) over all training batches, and the weights."""
        means = {k: v / self._n_total for k, v in self._total.items()} if self._n_total else {}
        return {**means, "weights": {"task": self.spec.task_weight, "kd": self.spec.kd_weight,
                                     "tcd": self.spec.tcd_weight}}  # fmt: skip
