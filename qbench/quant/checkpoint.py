"""The packed low-bit checkpoint: one safetensors file per quantized model (`export_packed`, `load_packed`).

`export_packed(model, path, meta)` writes:
- every quantized tensor T (a parametrization implementing `qbench.quant.packing.Packable`) as `T.codes` (uint8,
  b-bit codes packed back to back) plus its side tensors in fp32 (`T.centroids` for k-means, `T.scale` and
  `T.offset` per tensor/row/group for linear, `T.step` and `T.levels` for the scaled QAT schemes);
- every other tensor of the state dict in fp32 (non-float buffers keep their dtype); latent full-precision weights
  of quantized tensors are NOT stored;
- a tensor shared by several modules (tied embeddings, ALBERT's shared layers) once, its other names listed;
- metadata: `config` (the HF config JSON), `model_class` (the transformers class), `qbench` (JSON: per quantized
  tensor codec, bits, shape, dtype, transposed, scheme, tied names; per fp tensor dtype and tied names; `meta`).

`load_packed(path)` rebuilds the model from the stored config and class and fills plain weights equal, bit for
bit, to the fake-quantized weights the exported model computed with. `pack(model)` is what both the writer and
the size accounting (qbench.size) read: the tensors, the metadata and their byte counts.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import parametrize
from transformers import AutoConfig
from transformers.initialization import no_init_weights
from transformers.pytorch_utils import Conv1D

from qbench.errors import QbenchError
from qbench.integrity import file_problem, seal_file, sidecar
from qbench.quant.packing import Packable, pack_bits, packed_nbytes, side_bits, unpack_bits
from qbench.quant.wiring import ActFakeQuant

FORMAT = "qbench-packed-1"
PACKED_NAME = "model.packed.safetensors"


@dataclass
class QTensor:
    name: str  # first parameter name, e.g. transformer.h.0.attn.c_attn.weight
    tied: list[str]
    module: nn.Module
    quantizer: nn.Module
    latent: torch.Tensor
    transposed: bool


@dataclass
class Collected:
    quantized: list[QTensor] = field(default_factory=list)
    fp: dict[str, tuple[torch.Tensor, list[str]]] = field(default_factory=dict)  # name -> (tensor, tied names)


def collect(model: nn.Module) -> Collected:
    """Quantized weights (one per latent tensor) and the other state-dict tensors (one per distinct tensor)."""
    out, by_latent = Collected(), {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        if not parametrize.is_parametrized(module, "weight"):
            continue
        name = f"{mod_name}.weight" if mod_name else "weight"
        plist = module.parametrizations.weight
        key = id(plist.original)
        if key in by_latent:
            q = by_latent[key]
            if name != q.name and name not in q.tied:
                q.tied.append(name)
            if plist[0] is not q.quantizer:
                raise QbenchError(f"{name} shares its weight with {q.name} but has another quantizer")
            continue
        if len(plist) != 1 or not isinstance(plist[0], Packable):
            raise QbenchError(f"{name}: cannot pack parametrization {type(plist[0]).__name__} "
                              "(it must implement qbench.quant.packing.Packable)")  # fmt: skip
        p = plist[0]
        transposed = bool(getattr(p, "transposed", isinstance(module, Conv1D)))
        by_latent[key] = QTensor(name, [], module, p, plist.original, transposed)
        out.quantized.append(by_latent[key])
    seen: dict[tuple, str] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if ".parametrizations." in name:
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key in seen and t.numel():
            out.fp[seen[key]][1].append(name)
        else:
            seen[key] = name
            out.fp[name] = (t, [])
    return out


def _fp32(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().cpu()
    return (t.float() if t.is_floating_point() else t).contiguous()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def pack(model: nn.Module, meta: Mapping | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str], dict]:
    """(tensors, safetensors metadata, byte counts) of the packed checkpoint of a quantized model."""
    c = collect(model)
    tensors: dict[str, torch.Tensor] = {}
    qinfo, fpinfo = {}, {}
    counts = {"quantized_params": 0, "code_bytes": 0, "side_bytes": 0, "fp_params": 0, "fp_bytes": 0}
    for q in c.quantized:
        latent = q.latent.detach()
        state = dict(q.quantizer.packed_state(latent))
        codes, bits = state.pop("codes"), int(q.quantizer.bits)
        if codes.numel() != latent.numel():
            raise QbenchError(f"{q.name}: {type(q.quantizer).__name__}.packed_state gave {codes.numel()} codes "
                              f"for {latent.numel()} weights")  # fmt: skip
        tensors[f"{q.name}.codes"] = pack_bits(codes, bits)
        for k, v in state.items():
            tensors[f"{q.name}.{k}"] = v.detach().cpu().float().contiguous()
        scheme = getattr(q.quantizer, "scheme", None)
        qinfo[q.name] = {
            "codec": f"{type(q.quantizer).__module__}:{type(q.quantizer).__qualname__}",
            "bits": bits,
            "shape": list(latent.shape),
            "dtype": _dtype_name(latent.dtype),
            "transposed": q.transposed,
            "n": latent.numel(),
            "side": list(state),
            "tied": q.tied,
            **({"scheme": scheme.describe()} if hasattr(scheme, "describe") else {}),
        }
        counts["quantized_params"] += latent.numel()
        counts["code_bytes"] += packed_nbytes(latent.numel(), bits)
        counts["side_bytes"] += side_bits(state) // 8
    for name, (t, tied) in c.fp.items():
        if name in tensors:
            raise QbenchError(f"tensor name clash in the packed file: {name}")
        tensors[name] = _fp32(t)
        fpinfo[name] = {"dtype": _dtype_name(t.dtype), "tied": tied}
        counts["fp_params"] += t.numel()
        counts["fp_bytes"] += tensors[name].numel() * tensors[name].element_size()
    info = {"format": FORMAT, "quantized": qinfo, "fp": fpinfo, "act_quant": _act_hooks(model),
            "meta": dict(meta or {})}  # fmt: skip
    metadata = {
        "format": "pt",
        "qbench": json.dumps(info, separators=(",", ":")),
        "config": model.config.to_json_string(use_diff=False),
        "model_class": type(model).__name__,
    }
    return tensors, metadata, counts


def _act_hooks(model: nn.Module) -> dict[str, int]:
    """{module name: bits} of activation fake-quant pre-hooks (scheme act_bits): not weights, but part of what the
    model computes, so load_packed re-attaches them."""
    return {name: h.bits for name, m in model.named_modules() for h in m._forward_pre_hooks.values()
            if isinstance(h, ActFakeQuant)}  # fmt: skip


def export_packed(model: nn.Module, path: str | Path, meta: Mapping | None = None) -> int:
    """Write the packed checkpoint of a quantized model to `path` (one safetensors file); returns its bytes."""
    tensors, metadata, _ = pack(model, meta)
    return write_file(tensors, metadata, Path(path))


def write_file(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> int:
    """Write what `pack` returned to `path` atomically (a temporary file renamed into place), then its manifest
    `<path>.sha256` (qbench.integrity), which `load_packed` checks; returns the file's bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sidecar(path).unlink(missing_ok=True)  # meanwhile a reader finds no manifest, never another file's
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    seal_file(path)
    return path.stat().st_size


def _codec(spec: str) -> type:
    """The parametrization class a packed file names ("module:qualname"); imported by name, qbench's own only."""
    mod, _, qual = spec.partition(":")
    if not mod.startswith("qbench."):
        raise QbenchError(f"packed file names codec {spec!r}, not a qbench class")
    cls = getattr(importlib.import_module(mod), qual, None)
    if cls is None or not hasattr(cls, "unpack"):
        raise QbenchError(f"packed file names codec {spec!r}, which this qbench does not have")
    return cls


def read_packed_info(path: str | Path) -> dict[str, str]:
    """The metadata header of a packed file (no tensor data is read)."""
    with damaged_as_error(path), safe_open(str(path), "pt") as f:
        md = f.metadata() or {}
    try:
        ok = json.loads(md["qbench"]).get("format") == FORMAT
    except (KeyError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise QbenchError(f"{path}: not a qbench packed checkpoint ({FORMAT})")
    return md


def check_packed(path: Path) -> None:
    """Refuse, in one line, a packed file that differs from its manifest (cut short, emptied, overwritten); a
    file without one (written before manifests) is left to the format's own checks."""
    problem = file_problem(path)
    if problem not in (None, "no manifest"):
        raise QbenchError(f"{path}: damaged packed checkpoint ({problem}); delete it and run qbench export again")


@contextmanager
def damaged_as_error(path: str | Path):
    """safetensors' errors on a file it cannot parse as one QbenchError line naming the file."""
    try:
        yield
    except SafetensorError as e:
        raise QbenchError(f"{path}: damaged packed checkpoint ({str(e).splitlines()[0]})") from None


def load_packed(path: str | Path) -> nn.Module:
    """Rebuild the model of a packed checkpoint (stored config and class, no hub access) with plain weights equal
    to the fake-quantized ones; returned in eval mode on the CPU. A damaged file is refused (QbenchError)."""
    check_packed(Path(path))
    md = read_packed_info(path)
    info = json.loads(md["qbench"])
    cls = getattr(transformers, md["model_class"], None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise QbenchError(f"{path}: unknown model class {md['model_class']!r} in this transformers")
    cfg = json.loads(md["config"])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with no_init_weights():  # every tensor is overwritten below
        model = cls(config)
    model.tie_weights()
    sd: dict[str, torch.Tensor] = {}
    with damaged_as_error(path), safe_open(str(path), "pt") as f:
        for name, q in info["quantized"].items():
            state = {k: f.get_tensor(f"{name}.{k}") for k in q["side"]}
            state["codes"] = unpack_bits(f.get_tensor(f"{name}.codes"), q["bits"], q["n"]).long()
            w = _codec(q["codec"]).unpack(state, q)
            for n in (name, *q["tied"]):
                sd[n] = w
        for name, fp in info["fp"].items():
            t = f.get_tensor(name).to(getattr(torch, fp["dtype"]))
            for n in (name, *fp["tied"]):
                sd[n] = t
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise QbenchError(f"{path}: does not fit {md['model_class']}: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")  # fmt: skip
    for name, bits in (info.get("act_quant") or {}).items():
        model.get_submodule(name).register_forward_pre_hook(ActFakeQuant(bits))
    return model.eval()
