"""One experiment cell from a composed config: the scheme built, every key checked, before any work is done."""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from qbench.config import check_config, for_task
from qbench.data import split_file
from qbench.distill import DistillSpec
from qbench.errors import QbenchError
from qbench.models import check_available
from qbench.quant.schemes import NoQuant, Scheme
from qbench.tasks import TaskSpec


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


def validate(cfg: DictConfig) -> tuple[TaskSpec, Scheme | NoQuant]:
    """Check a composed config before any work: the scheme, every other key's type and range (qbench.config),
    model-task fit, the task spec, combinations, then that weights and data splits can be found."""
    scheme = build_scheme(cfg)  # the scheme's dataclass checks bits and its own keys
    check_config(cfg)
    cfg = for_task(cfg)  # and as the cell will run: with its task's train.tasks entry merged into train
    check_config(cfg)
    task = TaskSpec.from_config(OmegaConf.to_container(cfg.task, resolve=True))
    order, optim = cfg.train.order, cfg.train.optim
    if DistillSpec.from_config(cfg.get("distill")).active and (
        isinstance(scheme, NoQuant) or order not in ("qat", "ft_then_qat")
    ):
        raise QbenchError(f"distill={cfg.distill.name} teaches quantization-aware training: it needs a quantizing "
                          "scheme and train.order=qat or ft_then_qat")  # fmt: skip
    fp_cap, qat_cap = cfg.train.max_train_examples, (cfg.train.get("qat") or {}).get("max_train_examples")
    if fp_cap is not None and qat_cap is not None and qat_cap > fp_cap:
        raise QbenchError(f"train.qat.max_train_examples={qat_cap}: at most train.max_train_examples={fp_cap} (the QAT "
                          "stage trains on the first N of the same examples)")  # fmt: skip
    if scheme.name == "laq" and optim != "adamw_torch":
        raise QbenchError(f"scheme=laq reads Adam's second moments: train.optim={optim!r} needs adamw_torch")
    check_available(cfg.model)
    for split in ((task.train_split,) if order != "zeroshot" else ()) + task.eval_splits:
        split_file(task, split, cfg.data_dir)  # a missing local split fails here, naming its path
    return task, scheme
