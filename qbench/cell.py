"""One experiment cell: the composed Hydra config read once, checked and split into typed parts.

`parse(cfg)` is where a run reads its raw config: it builds the scheme, checks every key against the schemas of
qbench.config (with the task's train.tasks entry merged), checks combinations and that weights and data can be
found, and returns a `Cell`. Everything downstream (pipeline, kinds, training, models, data) reads typed parts:
the model (`ModelSchema`), the task (`TaskSpec`), the scheme, the training stages (`TrainSchema`, FP and QAT),
the distillation (`DistillSpec`), the data source, and the run's seed and device.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from qbench.config import QAT_ONLY, ModelSchema, TrainSchema, check_config, for_task, typed_config
from qbench.data import split_file
from qbench.distill import DistillSpec
from qbench.errors import QbenchError
from qbench.fp_cache import fp_cache_dir
from qbench.models import check_available
from qbench.quant.schemes import Calibration, NoQuant, Scheme
from qbench.sweep import cell_id, data_identity
from qbench.tasks import TaskSpec


@dataclass(frozen=True)
class DataSource:
    """Where the examples come from: the local mirror (`data_dir`; a task's own `task.data_dir` wins, see
    qbench.data) and the fingerprint of the local files read ({split: file, bytes, sha256}; None = the hub)."""

    data_dir: str | None
    identity: dict | None


@dataclass(frozen=True)
class Cell:
    """One configuration, typed and checked; `config` is the resolved config the record keeps."""

    id: str
    model: ModelSchema
    task: TaskSpec
    scheme: Scheme | NoQuant
    train: TrainSchema  # the full-precision stage (and the QAT stage's defaults)
    qat: TrainSchema  # the quantization-aware stage: train with the non-null train.qat.* on top
    distill: DistillSpec
    data: DataSource
    seed: int
    device: str  # resolved: "cpu" or "cuda"
    fp_cache: Path  # the folder of this cell's full-precision fine-tune (qbench.fp_cache)
    export: bool
    save_predictions: bool
    config: dict
    also_eval: tuple[TaskSpec, ...] = ()  # other tasks of its kind scored by the final model (metrics task:split)

    @property
    def order(self) -> str:
        return self.train.order

    @property
    def quantize(self) -> bool:
        return not isinstance(self.scheme, NoQuant)

    @property
    def calibration(self) -> Calibration | None:
        """The statistics the scheme measures before quantizing (None: a data-free scheme, or none)."""
        return needs_calibration(self.scheme)

    @property
    def needs_train(self) -> bool:
        """Whether the run reads the training split: to fine-tune, or to calibrate the scheme."""
        return self.order != "zeroshot" or self.calibration is not None


def needs_calibration(scheme: Scheme | NoQuant) -> Calibration | None:
    return None if isinstance(scheme, NoQuant) else scheme.calibration()


def build_scheme(cfg: DictConfig) -> Scheme | NoQuant:
    """Instantiate cfg.scheme, turning validation errors and contradictions into QbenchError."""
    try:
        scheme = instantiate(cfg.scheme)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, QbenchError):
            cause = cause.__cause__
        raise (cause or QbenchError(f"scheme: {e.__cause__ or e}".splitlines()[0])) from None
    return scheme


def resolve_device(name: str) -> str:
    """device=auto|cpu|cuda -> "cuda" or "cpu" (auto: CUDA when available); the one place this is decided."""
    if name == "cuda" and not torch.cuda.is_available():
        raise QbenchError("device=cuda: no CUDA device is available here; use device=auto or device=cpu")
    return "cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu"


def qat_stage(train: TrainSchema) -> TrainSchema:
    """The quantization-aware stage's settings: train.* with the non-null train.qat.* on top."""
    return replace(train, **{k: v for k, v in asdict(train.qat).items() if v is not None and k not in QAT_ONLY})


def parse(cfg: DictConfig) -> Cell:
    """Check a composed config before any work and return its typed cell: the scheme, every other key's type and
    range (qbench.config), model-task fit, the task spec, combinations, then that weights and data can be found."""
    scheme = build_scheme(cfg)  # the scheme's dataclass checks bits and its own keys
    check_config(cfg)
    cfg = for_task(cfg)  # and as the cell will run: with its task's train.tasks entry merged into train
    c = typed_config(cfg)
    task = TaskSpec.from_config(OmegaConf.to_container(cfg.task, resolve=True))
    distill = DistillSpec.from_config(OmegaConf.to_container(cfg.distill, resolve=True))  # as written, once
    check_combinations(scheme, c.train, distill)
    check_available(c.model)
    reads_train = c.train.order != "zeroshot" or needs_calibration(scheme) is not None
    for split in ((task.train_split,) if reads_train else ()) + task.eval_splits:
        split_file(task, split, c.data_dir)  # a missing local split fails here, naming its path
    also = also_eval(cfg, task, c.data_dir)
    return Cell(id=cell_id(cfg), model=c.model, task=task, scheme=scheme, train=c.train, qat=qat_stage(c.train),
                distill=distill, data=DataSource(c.data_dir, data_identity(cfg)), seed=c.seed,
                device=resolve_device(c.device), fp_cache=fp_cache_dir(cfg), export=c.export,
                save_predictions=c.save_predictions, config=OmegaConf.to_container(cfg, resolve=True),
                also_eval=also)  # fmt: skip


def also_eval(cfg: DictConfig, task: TaskSpec, data_dir: str | None) -> tuple[TaskSpec, ...]:
    """The extra evaluation tasks (`also_eval`): of the cell's task kind, their evaluation splits found."""
    out = []
    for name, node in (cfg.get("also_eval") or {}).items():
        spec = TaskSpec.from_config(OmegaConf.to_container(node, resolve=True))
        if spec.kind != task.kind:
            raise QbenchError(f"also_eval.{name}: task {spec.name} is {spec.kind}; the cell's task {task.name} is "
                              f"{task.kind} (the same model scores both)")  # fmt: skip
        for split in spec.eval_splits:
            split_file(spec, split, data_dir)
        out.append(spec)
    return tuple(out)


def check_combinations(scheme: Scheme | NoQuant, train: TrainSchema, distill: DistillSpec) -> None:
    """Settings that are valid alone but not together."""
    order, optim = train.order, train.optim
    if distill.active and (isinstance(scheme, NoQuant) or order not in ("qat", "ft_then_qat")):
        raise QbenchError(f"distill={distill.name} teaches quantization-aware training: it needs a quantizing "
                          "scheme and train.order=qat or ft_then_qat")  # fmt: skip
    fp_cap, qat_cap = train.max_train_examples, train.qat.max_train_examples
    if fp_cap is not None and qat_cap is not None and qat_cap > fp_cap:
        raise QbenchError(f"train.qat.max_train_examples={qat_cap}: at most train.max_train_examples={fp_cap} (the QAT "
                          "stage trains on the first N of the same examples)")  # fmt: skip
    if train.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise QbenchError('train.report_to=tensorboard needs tensorboard: pip install "qbench[tensorboard]"')
    qlr = train.qat.quantizer_lr
    if qlr is not None and not (getattr(scheme, "learns_range", False) and order in ("qat", "ft_then_qat")):
        raise QbenchError(f"train.qat.quantizer_lr={qlr}: only a quantization-aware stage (train.order=qat or "
                          f"ft_then_qat) of a scheme with learned ranges (pact, lsq, mds) trains them; here "
                          f"scheme={scheme.name}, train.order={order}: leave it null")  # fmt: skip
    if scheme.name == "laq" and optim != "adamw_torch":
        raise QbenchError(f"scheme=laq reads Adam's second moments: train.optim={optim!r} needs adamw_torch")
