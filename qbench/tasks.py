"""Tasks are data: a `conf/task/*.yaml` becomes a validated `TaskSpec`; metrics are scikit-learn/scipy."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from qbench.config import GenerationSchema, LmSchema
from qbench.errors import QbenchError

# name -> (module, function): the official GLUE metrics, imported when first computed
METRICS = {
    "accuracy": ("sklearn.metrics", "accuracy_score"),
    "f1": ("sklearn.metrics", "f1_score"),  # positive class 1
    "matthews": ("sklearn.metrics", "matthews_corrcoef"),
    "pearson": ("scipy.stats", "pearsonr"),
    "spearman": ("scipy.stats", "spearmanr"),
}
# computed by the generative kinds themselves (qbench.kinds.generative), not from (labels, predictions)
KIND_METRICS = ("perplexity", "loss", "token_accuracy", "rouge1", "rouge2", "rougeL", "rougeLsum")
LOWER_IS_BETTER = ("perplexity", "loss")  # every other metric is higher-better


def worse_by(metric_name: str, reference: float, value: float) -> float:
    """How much worse `value` is than `reference` on this metric (> 0: worse), whatever its direction."""
    return value - reference if metric_name in LOWER_IS_BETTER else reference - value


def metric(name: str, labels: np.ndarray, predictions: np.ndarray) -> float:
    """One metric of predictions (class ids, or scores for regression) against labels."""
    module, fn = METRICS[name]
    value = getattr(importlib.import_module(module), fn)(labels, predictions)
    return float(getattr(value, "statistic", value))  # scipy returns (statistic, p-value) objects


@dataclass(frozen=True)
class TaskSpec:
    """One task: where its data lives, which splits train and evaluate, and how it is scored."""

    name: str
    metrics: tuple[str, ...]
    main_metric: str
    eval_splits: tuple[str, ...]
    kind: str = "classification"  # see qbench.kinds
    train_split: str = "train"
    hub: Mapping = field(default_factory=dict)  # {path, name} for datasets.load_dataset
    mirror: str | None = None  # folder under the local mirror (data_dir) holding <split>.parquet
    data_dir: str | None = None  # a user's folder holding <split>.parquet / .jsonl / .csv; wins over the mirror
    text_fields: tuple[str, ...] = ()
    num_labels: int = 2  # 1 = regression
    label_field: str | None = "label"  # null for language modelling
    id_field: str = "idx"
    files: Mapping = field(default_factory=dict)  # split -> file name in the mirror / data_dir (e.g. test: test.txt)
    lm: LmSchema = field(default_factory=LmSchema)  # causal LM evaluation windows (qbench.config: the defaults)
    generation: GenerationSchema = field(default_factory=GenerationSchema)  # summarization's beam search, likewise

    def __post_init__(self) -> None:
        bad = [m for m in self.metrics if m not in METRICS and m not in KIND_METRICS]
        if bad:
            valid = ", ".join((*METRICS, *KIND_METRICS))
            raise QbenchError(f"task {self.name}: unknown metric(s) {bad}; valid: {valid}")
        if self.main_metric not in self.metrics:
            raise QbenchError(f"task {self.name}: main_metric {self.main_metric!r} is not in metrics {self.metrics}")
        if self.kind == "classification" and not 1 <= len(self.text_fields) <= 2:
            raise QbenchError(f"task {self.name}: text_fields must name one or two columns")

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @classmethod
    def from_config(cls, cfg: Mapping) -> TaskSpec:
        d = dict(cfg)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise QbenchError(f"task {d.get('name')}: unknown key(s) {sorted(unknown)}")
        for k in ("text_fields", "metrics", "eval_splits"):
            d[k] = tuple(d[k])
        for k in ("hub", "files"):
            d[k] = dict(d.get(k) or {})
        for k, section in (("lm", LmSchema), ("generation", GenerationSchema)):  # null = the schema's default
            d[k] = section(**{key: v for key, v in (d.get(k) or {}).items() if v is not None})
        return cls(**d)

    def compute_metrics(self, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        """The task's official metrics of predictions (class ids, or scores for regression) against labels."""
        return {m: metric(m, labels, predictions) for m in self.metrics}
