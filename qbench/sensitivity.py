"""Sensitivity of module groups (Q-BERT / HAWQ style): `qbench sensitivity [key=value ...]`.

The sensitivity of a group at b bits is the metric of a post-training-quantization cell of the cached FP fine-tune
with only that group quantized at b bits (`scheme.only` = the group's patterns), against the FP cell of the same
settings. The command runs the FP cell, then every (group, bits) cell, as two Hydra multiruns of `qbench run` into
results/sweeps/<study>/: the same cell ids, FP cache, resume, failed records and launchers as any sweep.
`qbench allocate` (qbench.allocate) turns the records into bits per group; the command itself is
qbench.cli.sensitivity_command.

Groups are data: a model yaml's `groups:` {name: fnmatch patterns}, where "{i}" stands for each layer
0..num_hidden_layers-1 (of the yaml's `arch:`, else `config:`). They partition the quantized weights (MiniLM:
embed + attn0..5 + ffn0..5 = 13 groups); `partition` checks that on the model's parameter names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

from qbench.errors import QbenchError
from qbench.overrides import swept_values

LAYER = "{i}"
DEFAULT_BITS = "2,3,4"
ORDERS = ("ptq", "zeroshot")  # from the FP fine-tune (default), or from the pre-trained model
HELP = f"""usage: qbench sensitivity [key=value ...]

Runs the sensitivity study of a model's module groups (its yaml's `groups:`): the full-precision cell, then one
post-training-quantization cell per (group, bits) with only that group quantized (scheme.only), all from the one
cached FP fine-tune, into results/sweeps/<study>/ (default study: sensitivity_<model>_<task>_<scheme>). Any
`qbench run` key applies to every cell; bits=... lists the bit widths (default {DEFAULT_BITS}); train.order is ptq
(default) or zeroshot. Completed cells are skipped, so rerunning the command resumes it. Then:
  qbench allocate results/sweeps/<study> --budget 3.0 --out alloc.yaml
Example:
  qbench sensitivity model=minilm task=sst2 train=cpu scheme=kmeans scheme.granularity=row bits=2,3,4"""


def layer_count(model: Mapping) -> int:
    """num_hidden_layers (GPT-2: n_layer) of a model node's `arch:` (else `config:`)."""
    shape = model.get("arch") or model.get("config") or {}
    n = shape.get("num_hidden_layers", shape.get("n_layer"))
    if not isinstance(n, int):
        raise QbenchError(f"model={model.get('name')}: its groups use {LAYER} but its arch:/config: has no "
                          "num_hidden_layers")  # fmt: skip
    return n


def expand(groups: Mapping[str, Sequence[str]], layers: int) -> dict[str, list[str]]:
    """{name: patterns} with each "{i}" entry repeated for layers 0..layers-1, in the yaml's order."""
    out = {}
    for name, patterns in groups.items():
        per_layer = LAYER in name
        if any((LAYER in p) != per_layer for p in patterns):
            raise QbenchError(f"model.groups.{name}: {LAYER} must be in the name and in every pattern, or in none")
        for i in [str(i) for i in range(layers)] if per_layer else [LAYER]:  # LAYER by itself: unchanged
            out[name.replace(LAYER, i)] = [p.replace(LAYER, i) for p in patterns]
    return out


def model_groups(model: Mapping) -> dict[str, list[str]]:
    """The expanded sensitivity groups of a model node (a composed config's `model`, or a record's)."""
    groups = dict(model.get("groups") or {})
    if not groups:
        raise QbenchError(f"model={model.get('name')} has no sensitivity groups: add `groups:` to its yaml "
                          "(conf/model/minilm.yaml shows how)")  # fmt: skip
    per_layer = any(LAYER in name for name in groups)
    return expand(groups, layer_count(model) if per_layer else 0)


def partition(names: Sequence[str], groups: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """{group: its weight names}; every name must match exactly one group (else the groups do not partition the
    quantized weights, and an allocation would leave weights out or count them twice)."""
    out = {g: [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)] for g, patterns in groups.items()}
    for name in names:
        hits = [g for g, members in out.items() if name in members]
        if len(hits) != 1:
            raise QbenchError(f"{name} is in {len(hits)} sensitivity groups {hits}; each weight must be in one")
    if empty := [g for g, members in out.items() if not members]:
        raise QbenchError(f"sensitivity group {empty[0]} ({list(groups[empty[0]])}) matches no quantized weight")
    return out


def check_partition(model_node) -> None:
    """The groups partition what the model quantizes: checked on the parameter names of its full-size shape,
    built on the meta device (no weights, no memory); skipped for a model yaml without a shape."""
    import torch

    from qbench.config import model_schema
    from qbench.models import arch_model
    from qbench.quant.wiring import select

    schema = model_schema(model_node)
    if not (schema.arch or schema.config):
        return
    with torch.device("meta"):
        model = arch_model(schema)
    partition(list(select(model, schema.include, schema.exclude)), model_groups(model_node))


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def sweeps(args: list[str], groups: Mapping[str, Sequence[str]], study: str) -> tuple[list[str], list[str]]:
    """The two multiruns' overrides: the FP cell (no scheme settings, scheme=none), then groups x bits."""
    bits = ",".join(swept_values(args, "bits")) or DEFAULT_BITS
    order = (swept_values(args, "train.order") or ["ptq"])[-1]
    if order not in ORDERS:
        raise QbenchError(f"train.order={order}: sensitivity cells are post-training ({', '.join(ORDERS)})")
    common = [a for a in args if key_of(a) not in ("bits", "train.order", "study", "scheme.only")]
    common += [f"train.order={order}", f"study={study}"]
    quant_keys = ("scheme", "embed_bits", "act_bits")
    fp = [a for a in common if key_of(a) not in quant_keys and not key_of(a).startswith("scheme.")] + ["scheme=none"]
    only = ",".join("[" + ",".join(patterns) + "]" for patterns in groups.values())  # a sweep of lists
    return fp, [*common, f"bits={bits}", f"+scheme.only={only}"]
