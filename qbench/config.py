"""Schemas of the composed config: every key's type and valid values, checked before any work is done.

`check_config(cfg)` merges the resolved config into `OmegaConf.structured(Config)`, which rejects unknown keys
(`+train.lr_typo=3`), values of the wrong type and missing keys. It then checks what OmegaConf converts silently
or does not know: strings standing for numbers or booleans (`seed='42'`, `progress_bar=no`), the range of each
key (the `valid`/`check` metadata of its field), task sections that the task's kind does not read, and whether
the model's family can run the task's kind. Each error is one QbenchError naming the key, the value and what is
valid. The scheme (qbench.quant) and the distillation spec (qbench.distill.DistillSpec) validate their own values.
"""

from __future__ import annotations

import copy
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from qbench.distill import DistillSpec
from qbench.errors import QbenchError

ORDERS = ("qat", "ptq", "ft_then_qat", "zeroshot")
OPTIMS = ("adamw_torch", "sgd")  # TrainingArguments(optim=...): AdamW (Trainer's default) or plain SGD
DEVICES = ("auto", "cpu", "cuda")
FAMILIES = ("encoder", "causal_lm", "seq2seq")
KINDS = ("classification", "causal_lm", "dialog", "summarization")  # qbench.kinds.KINDS
# model families each task kind can run (qbench/kinds/*.py): classification loads AutoModelForSequenceClassification
# (BERT/ALBERT heads; GPT-2/Llama pool the last token; BART's head needs one EOS per segment, which the kind does not
# add); causal_lm and dialog load AutoModelForCausalLM; summarization loads AutoModelForSeq2SeqLM
KIND_FAMILIES = {
    "classification": ("encoder", "causal_lm"),
    "causal_lm": ("causal_lm",),
    "dialog": ("causal_lm",),
    "summarization": ("seq2seq",),
}
# task sections read by each kind (None: every key of the section)
KIND_READS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "lm": {"causal_lm": None, "dialog": ("context_length",)},
    "generation": {"summarization": None},
}


def key(default: Any = MISSING, valid: str = "", check: Callable[[Any], bool] | None = None, factory=None) -> Any:
    """A schema field; `valid` describes the values `check` accepts (the type's own description when empty)."""
    meta = {"valid": valid, "check": check}
    return field(default_factory=factory, metadata=meta) if factory else field(default=default, metadata=meta)


def choice(*options: str, default: Any = MISSING) -> Any:
    return key(default, ", ".join(options), lambda v: v in options)


def gt(n: float, default: Any = MISSING) -> Any:
    return key(default, f"> {n}", lambda v: math.isfinite(v) and v > n)


def ge(n: float, default: Any = MISSING) -> Any:
    return key(default, f">= {n}", lambda v: math.isfinite(v) and v >= n)


def is_warmup(v: Any) -> bool:
    return not isinstance(v, bool) and (isinstance(v, int) and v >= 0 or isinstance(v, float) and 0 <= v < 1)


WARMUP = "an integer >= 0 (steps) or a number in [0, 1) (share of all steps)"
MAX_STEPS = "-1 (train for `epochs`) or an integer >= 1"


@dataclass
class QatSchema:
    """train.qat: overrides for the quantization-aware stage (null = as the full-precision fine-tune)."""

    lr: float | None = gt(0, None)
    epochs: float | None = gt(0, None)
    max_steps: int | None = key(None, MAX_STEPS, lambda v: v == -1 or v >= 1)
    max_train_examples: int | None = ge(1, None)
    warmup: Any = key(None, WARMUP, is_warmup)
    batch_size: int | None = ge(1, None)
    # the learned ranges of the quantizers (PACT α, LSQ s, MDS γ: qbench.quant.scaled.range_parameters) in an
    # optimizer group of their own, at this absolute learning rate, without weight decay, under the same schedule
    # (warmup, decay) as the weights. null: one learning rate (the stage's) and train.weight_decay for everything,
    # as before the key existed (a null key is not part of the cell id: qbench.sweep.unused)
    quantizer_lr: float | None = gt(0, None)


QAT_ONLY = ("quantizer_lr",)  # train.qat keys without a train.* counterpart: read by the QAT stage itself


@dataclass
class TrainSchema:
    """conf/train/*.yaml: HF Trainer settings and the pipeline order."""

    order: str = choice(*ORDERS)
    lr: float = gt(0)
    batch_size: int = ge(1)
    eval_batch_size: int = ge(1)
    epochs: float = gt(0)
    max_steps: int = key(MISSING, MAX_STEPS, lambda v: v == -1 or v >= 1)
    max_length: int = ge(1)
    warmup: Any = key(MISSING, WARMUP, is_warmup)
    weight_decay: float = ge(0)
    max_train_examples: int | None = ge(1)
    max_eval_examples: int | None = ge(1)
    logging_steps: int = ge(1)
    progress_bar: bool = key()
    optim: str = choice(*OPTIMS)
    sampler: str = choice("random", "group_by_length", default="random")  # TrainingArguments.train_sampling_strategy
    report_to: str = choice("none", "tensorboard", default="none")  # tensorboard: RUN_DIR/tensorboard/<stage>
    qat: QatSchema = key(factory=QatSchema)
    # per-task settings of a recipe, {task name: {train key: value}}, merged into train for that task's cells
    # (`for_task`): e.g. train=cpu caps SST-2's examples
    tasks: dict[str, Any] = key(factory=dict, valid="{task name: {train key: value}} (not order, qat or tasks)",
                                check=lambda v: all(isinstance(o, dict) and not set(o) & {"order", "qat", "tasks"}
                                                    for o in v.values()))  # fmt: skip


@dataclass
class ModelSchema:
    """conf/model/*.yaml: where the weights come from, the family, what is quantized."""

    name: str = key(MISSING, "a non-empty string", bool)
    name_or_path: str | None = key()
    tokenizer: str | None = key()
    config: dict[str, Any] | None = key(MISSING, "a mapping with model_type (a random init) or null",
                                           lambda v: "model_type" in v)  # fmt: skip
    family: str = choice(*FAMILIES)
    arch: dict[str, Any] | None = key(None, "a mapping with model_type or null", lambda v: "model_type" in v)
    include: list[str] = key()
    exclude: list[str] = key(factory=list)
    note: str | None = key(None)
    # sensitivity groups, {name: fnmatch patterns}, "{i}" = each layer: read by `qbench sensitivity` only
    groups: dict[str, list[str]] = key(factory=dict, valid="{group name: a non-empty list of fnmatch patterns}",
                                       check=lambda v: all(v.values()))  # fmt: skip


@dataclass
class HubSchema:
    path: str | None = key(None)
    name: str | None = key(None)


@dataclass
class LmSchema:
    """task.lm: causal LM windows (qbench/kinds/causal_lm.py); dialog reads context_length only. The defaults here
    are the only ones: a yaml's null means the default (qbench.tasks.TaskSpec)."""

    context_length: int | None = ge(1, None)  # null: the model's maximum (dialog: min(512, the model's maximum))
    stride: int | None = ge(1, None)  # null: context_length (disjoint windows)
    max_eval_tokens: int | None = ge(1, None)  # null: every token of the split
    batch_tokens: int | None = ge(1, 8192)  # evaluation windows per batch = batch_tokens // context_length


@dataclass
class GenerationSchema:
    """task.generation: beam search of the summarization kind (qbench/kinds/summarization.py). The defaults here
    are the only ones: a yaml's null means the default (qbench.tasks.TaskSpec)."""

    num_beams: int | None = ge(1, 4)
    max_source_length: int | None = ge(1, None)  # null: the model's maximum
    max_target_length: int | None = ge(1, 64)
    min_target_length: int | None = ge(0, 0)
    length_penalty: float | None = key(1.0)
    no_repeat_ngram_size: int | None = ge(0, 3)
    batch_size: int | None = ge(1, 8)
    samples: int | None = ge(0, 5)  # generated summaries kept in the record


@dataclass
class TaskSchema:
    """conf/task/*.yaml (metric names and main_metric are checked by qbench.tasks.TaskSpec)."""

    name: str = key(MISSING, "a non-empty string", bool)
    kind: str = choice(*KINDS)
    metrics: list[str] = key(MISSING, "a non-empty list of strings", bool)
    main_metric: str = key()
    eval_splits: list[str] = key(MISSING, "a non-empty list of strings", bool)
    train_split: str = key("train")
    hub: HubSchema = key(factory=HubSchema)
    mirror: str | None = key(None)
    data_dir: str | None = key(None)
    text_fields: list[str] = key(factory=list)
    num_labels: int = ge(1, 2)
    label_field: str | None = key("label")
    id_field: str = key("idx")
    files: dict[str, str] = key(factory=dict)
    lm: LmSchema | None = key(None)
    generation: GenerationSchema | None = key(None)


@dataclass
class AllocationNote:
    """`allocation`: the budget that `qbench allocate` met with a mixed cell's scheme.bits_by (not in the cell id)."""

    budget: float = key(MISSING, "a positive number", lambda v: v > 0)
    unit: str = choice("effective", "code")


@dataclass
class Config:
    """conf/config.yaml: the composed config of one run."""

    model: ModelSchema = key()
    task: TaskSchema = key()
    scheme: dict[str, Any] = key()  # built and validated by its own dataclass (qbench.quant, pipeline.build_scheme)
    train: TrainSchema = key()
    distill: DistillSpec = key(factory=DistillSpec)  # ranges: DistillSpec.__post_init__
    bits: int | None = key(MISSING, "an integer in 1..8 (checked by the scheme)")
    embed_bits: int | None = key(None, "an integer in 1..8 or null (checked by the scheme)")
    act_bits: int | None = key(None, "an integer in 1..8 or null (checked by the scheme)")
    seed: int = key(MISSING, "an integer in 0..2**32-1", lambda v: 0 <= v < 2**32)
    data_dir: str | None = key(None)
    device: str = choice(*DEVICES)
    save_predictions: bool = key(True)
    export: bool = key(False)
    force: bool = key(False)
    study: str = key(MISSING, "a non-empty string", bool)
    cache_dir: str | None = key(None)
    also_eval: dict[str, TaskSchema] = key(factory=dict)  # other tasks of the same kind scored by the final model
    allocation: AllocationNote | None = key(None)  # how scheme.bits_by was chosen (qbench allocate): bookkeeping


def task_overrides(d: Mapping) -> dict:
    """A resolved config dict with train.tasks[<its task>] merged into train and train.tasks dropped."""
    train = dict(d.get("train") or {})
    over = (train.pop("tasks", None) or {}).get((d.get("task") or {}).get("name")) or {}
    return {**d, "train": {**train, **over}} if "train" in d else dict(d)


def for_task(cfg: DictConfig) -> DictConfig:
    """The composed config of one cell with its task's train.tasks entry applied (a copy; see task_overrides)."""
    if not (cfg.train.get("tasks") or {}):
        return cfg
    out = copy.deepcopy(cfg)
    with open_dict(out):
        over = out.train.tasks.get(out.task.name) or {}
        del out.train["tasks"]
        out.train = OmegaConf.merge(out.train, over)
    return out


# ----------------------------------------------------------------------------------------------------------------
def check_config(cfg: DictConfig | Mapping) -> dict:
    """Validate a composed config against `Config`; returns it resolved as a plain dict. Raises QbenchError."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    except OmegaConfBaseException as e:
        raise QbenchError(f"{e.full_key}: {str(e).splitlines()[0]}") from None
    data.pop("hydra", None)
    schema = OmegaConf.structured(Config)
    OmegaConf.set_readonly(schema.distill, False)  # DistillSpec is a frozen dataclass
    try:
        merged = OmegaConf.merge(schema, data)
    except ConfigKeyError as e:
        raise QbenchError(unknown_key(e.full_key, data)) from None
    except OmegaConfBaseException as e:
        raise QbenchError(bad_value(e.full_key, lookup(data, e.full_key), str(e).splitlines()[0])) from None
    if missing := sorted(OmegaConf.missing_keys(merged)):
        raise QbenchError(f"{missing[0]} is missing; valid: {describe(*field_at(missing[0]))}")
    check_values(Config, data)
    check_task(data["task"])
    check_model(data["model"], data["task"])
    return data


def typed_config(cfg: DictConfig) -> Config:
    """check_config(cfg), then the config as typed objects: Config with ModelSchema, TrainSchema, DistillSpec...
    (qbench.cell builds a run's parts from it)."""
    data = check_config(cfg)
    schema = OmegaConf.structured(Config)
    OmegaConf.set_readonly(schema.distill, False)
    return OmegaConf.to_object(OmegaConf.merge(schema, data))


def model_schema(node: Mapping) -> ModelSchema:
    """A model yaml (conf/model/*.yaml, or its node of a composed config) as a ModelSchema, keys checked by
    OmegaConf; for callers that need a model without a whole cell (qbench size, benchmarks, tests)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelSchema), node))


def check_values(schema: type, data: Mapping, prefix: str = "") -> None:
    """Each value present in `data` has its field's exact type (no string for a number) and passes its check."""
    hints = typing.get_type_hints(schema)
    for f in fields(schema):
        if f.name not in data or data[f.name] is None:
            continue
        path, value, (tp, _) = f"{prefix}{f.name}", data[f.name], unwrap(hints[f.name])
        if is_dataclass(tp):
            check_values(tp, value, f"{path}.")
            continue
        check = f.metadata.get("check")
        if not exact_type(tp, value) or check and not check(value):
            raise QbenchError(bad_value(path, value))


def check_task(task: Mapping) -> None:
    """Sections that the task's kind does not read are errors, not silently ignored settings."""
    for section, readers in KIND_READS.items():
        given = {k: v for k, v in (task.get(section) or {}).items() if v is not None}
        if task["kind"] not in readers and given:
            k = next(iter(given))
            raise QbenchError(f"task.{section}.{k}={fmt(given[k])}: task {task['name']} is {task['kind']}; only "
                              f"{', '.join(readers)} tasks read task.{section}")  # fmt: skip
        reads = readers.get(task["kind"])
        for k in given:
            if reads is not None and k not in reads:
                raise QbenchError(f"task.{section}.{k}={fmt(given[k])}: {task['kind']} tasks read only "
                                  f"{', '.join(f'task.{section}.{r}' for r in reads)}")  # fmt: skip


def check_model(model: Mapping, task: Mapping) -> None:
    """Weights (or a config) and a tokenizer are named, and the model's family can run the task's kind."""
    if not model.get("name_or_path") and not model.get("config"):
        raise QbenchError(f"model={model['name']}: set model.name_or_path (weights) or model.config (random init)")
    if not model.get("name_or_path") and not model.get("tokenizer"):
        raise QbenchError(f"model={model['name']}: set model.tokenizer (a random-init model has no tokenizer)")
    families = KIND_FAMILIES[task["kind"]]
    if model["family"] not in families:
        raise QbenchError(f"model={model['name']} (model.family={model['family']}) cannot run task={task['name']} "
                          f"({task['kind']}); {task['kind']} tasks need a model of family "
                          f"{' or '.join(families)}")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
def unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type inside ... | None, whether it was Optional)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return tp, False


def exact_type(tp: Any, v: Any) -> bool:
    """v is of type tp without conversion (OmegaConf would accept '42' for an int and 1 for a bool)."""
    origin = typing.get_origin(tp)
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if tp is str:
        return isinstance(v, str)
    if origin is list:
        return isinstance(v, list) and all(exact_type(typing.get_args(tp)[0], x) for x in v)
    if origin is dict:
        return isinstance(v, dict) and all(exact_type(typing.get_args(tp)[1], x) for x in v.values())
    return True  # Any


def field_at(path: str) -> tuple[Any, Any]:
    """(type hint, dataclass field) of a dotted key of Config, (Any, None) when it is not a schema field."""
    schema, tp, f = Config, Any, None
    for part in path.split("."):
        if not is_dataclass(schema):
            return Any, None
        f = next((x for x in fields(schema) if x.name == part), None)
        if f is None:
            return Any, None
        tp = typing.get_type_hints(schema)[part]
        schema = unwrap(tp)[0]
    return tp, f


TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def describe(tp: Any, f: Any) -> str:
    """What a field accepts, e.g. 'an integer >= 1 or null'."""
    inner, optional = unwrap(tp)
    valid = f.metadata.get("valid", "") if f is not None else ""
    if not valid or valid[0] in "<>=":
        name = TYPE_NAMES.get(inner) or ("a list of strings" if typing.get_origin(inner) is list else "a mapping")
        valid = f"{name} {valid}".strip()
    return f"{valid} or null" if optional and "null" not in valid else valid


def bad_value(path: str, value: Any, why: str = "") -> str:
    tp, f = field_at(path)
    return f"{path}={fmt(value)}; valid: {describe(tp, f)}" if f is not None else f"{path}={fmt(value)}: {why}"


def unknown_key(path: str, data: Mapping) -> str:
    parent, _, _ = path.rpartition(".")
    tp, _ = field_at(parent) if parent else (Config, None)
    schema = unwrap(tp)[0]
    names = ", ".join(f.name for f in fields(schema)) if is_dataclass(schema) else ""
    where = f"of {parent}" if parent else "at the top level"
    return f"unknown key {path}={fmt(lookup(data, path))} (nothing reads it); valid keys {where}: {names}"


def lookup(data: Any, path: str) -> Any:
    for part in path.split(".") if path else ():
        data = data.get(part) if isinstance(data, Mapping) else None
    return data


def fmt(v: Any) -> str:
    """A value as it is written on the command line: null, true, 3, 'text'."""
    if v is None or isinstance(v, bool):
        return "null" if v is None else str(v).lower()
    return repr(v)
