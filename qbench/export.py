"""Packed low-bit checkpoints and honest size accounting.

`export_packed(model, path, meta)` writes ONE safetensors file for a quantized model:
- every quantized tensor T (a parametrization implementing `qbench.quant.packing.Packable`) as `T.codes` (uint8,
  b-bit codes packed back to back) plus its side tensors in fp32 (`T.centroids` for k-means, `T.scale` and
  `T.offset` per tensor/row/group for linear);
- every other tensor of the state dict in fp32 (non-float buffers keep their dtype); latent full-precision weights
  of quantized tensors are NOT stored;
- a tensor shared by several modules (tied embeddings, ALBERT's shared layers) once, its other names listed;
- metadata: `config` (the HF config JSON), `model_class` (the transformers class), `qbench` (JSON: per quantized
  tensor codec, bits, shape, dtype, transposed, scheme, tied names; per fp tensor dtype and tied names; `meta`).

`load_packed(path)` rebuilds the model from the stored config and class and fills plain weights equal, bit for
bit, to the fake-quantized weights the exported model computed with.

Sizes: `fp32_bytes(model)` is the size of an fp32 safetensors checkpoint of the same model (tied tensors once, as
save_pretrained writes it); `paper_b_bits` is paper B's convention (Tao et al. 2022): the word embedding and every
Linear/Conv1D weight at b bits, everything else (position embeddings, biases, LayerNorm, ...) at 32 bits.
`size_section` is the `size` part of a run record; safetensors sizes are computed exactly without writing.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from qbench.errors import QbenchError
from qbench.quant.packing import Packable, pack_bits, packed_nbytes, unpack_bits

FORMAT = "qbench-packed-1"
PACKED_NAME = "model.packed.safetensors"
FAMILIES = {
    "encoder": "AutoModelForSequenceClassification",
    "causal_lm": "AutoModelForCausalLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
}

# safetensors dtype names, and the order in which the writer lays tensors out (descending, then by name)
_ST_DTYPES = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.float8_e5m2: "F8_E5M2",
    torch.float8_e4m3fn: "F8_E4M3", torch.int16: "I16", torch.uint16: "U16", torch.float16: "F16",
    torch.bfloat16: "BF16", torch.int32: "I32", torch.uint32: "U32", torch.float32: "F32", torch.float64: "F64",
    torch.int64: "I64", torch.uint64: "U64",
}  # fmt: skip
_ST_RANK = {name: i for i, name in enumerate(_ST_DTYPES.values())}


def safetensors_nbytes(entries: Mapping[str, tuple[torch.dtype, Iterable[int]]], metadata: Mapping[str, str]) -> int:
    """Exact size in bytes of the safetensors file `save_file` writes for tensors {name: (dtype, shape)}:
    8-byte header length + JSON header padded with spaces to a multiple of 8 + the data."""
    order = sorted(entries, key=lambda k: (-_ST_RANK[_ST_DTYPES[entries[k][0]]], k))
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in order:
        dtype, shape = entries[name]
        shape = [int(s) for s in shape]
        n = dtype.itemsize * _numel(shape)
        header[name] = {"dtype": _ST_DTYPES[dtype], "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    h = len(json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode())
    return 8 + (h + 7) // 8 * 8 + offset


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


@dataclass
class _QTensor:
    name: str  # first parameter name, e.g. transformer.h.0.attn.c_attn.weight
    tied: list[str]
    module: nn.Module
    quantizer: nn.Module
    latent: torch.Tensor
    transposed: bool


@dataclass
class _Collected:
    quantized: list[_QTensor] = field(default_factory=list)
    fp: dict[str, tuple[torch.Tensor, list[str]]] = field(default_factory=dict)  # name -> (tensor, tied names)


def _collect(model: nn.Module) -> _Collected:
    """Quantized weights (one per latent tensor) and the other state-dict tensors (one per distinct tensor)."""
    from transformers.pytorch_utils import Conv1D

    out, by_latent = _Collected(), {}
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
        by_latent[key] = _QTensor(name, [], module, p, plist.original, transposed)
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


def _pack(model: nn.Module, meta: Mapping | None) -> tuple[dict[str, torch.Tensor], dict[str, str], dict]:
    """(tensors, safetensors metadata, byte counts) of the packed checkpoint of a quantized model."""
    c = _collect(model)
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
        counts["side_bytes"] += sum(4 * v.numel() for v in state.values())
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
    from qbench.quant.wiring import ActFakeQuant

    return {name: h.bits for name, m in model.named_modules() for h in m._forward_pre_hooks.values()
            if isinstance(h, ActFakeQuant)}  # fmt: skip


def export_packed(model: nn.Module, path: str | Path, meta: Mapping | None = None) -> int:
    """Write the packed checkpoint of a quantized model to `path` (one safetensors file); returns its bytes."""
    tensors, metadata, _ = _pack(model, meta)
    return _write(tensors, metadata, Path(path))


def _write(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> int:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def _codec(spec: str) -> type:
    mod, _, qual = spec.partition(":")
    if not mod.startswith("qbench."):
        raise QbenchError(f"packed file names codec {spec!r}, not a qbench class")
    cls = getattr(importlib.import_module(mod), qual, None)
    if cls is None or not hasattr(cls, "unpack"):
        raise QbenchError(f"packed file names codec {spec!r}, which this qbench does not have")
    return cls


def read_packed_info(path: str | Path) -> dict[str, str]:
    """The metadata header of a packed file (no tensor data is read)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        md = f.metadata() or {}
    if "qbench" not in md or json.loads(md["qbench"]).get("format") != FORMAT:
        raise QbenchError(f"{path}: not a qbench packed checkpoint ({FORMAT})")
    return md


def load_packed(path: str | Path) -> nn.Module:
    """Rebuild the model of a packed checkpoint (stored config and class, no hub access) with plain weights equal
    to the fake-quantized ones; returned in eval mode on the CPU."""
    import transformers
    from safetensors import safe_open
    from transformers import AutoConfig
    from transformers.initialization import no_init_weights

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
    with safe_open(str(path), "pt") as f:
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
    if info.get("act_quant"):
        from qbench.quant.wiring import ActFakeQuant

        for name, bits in info["act_quant"].items():
            model.get_submodule(name).register_forward_pre_hook(ActFakeQuant(bits))
    return model.eval()


def fp32_bytes(model: nn.Module) -> int:
    """Bytes of an fp32 safetensors checkpoint of the same model (quantized weights at full shape, tied tensors
    once, latent copies and quantizer state not counted; metadata {'format': 'pt'} as save_pretrained writes)."""
    return safetensors_nbytes(_fp32_entries(model), {"format": "pt"})


def _fp32_entries(model: nn.Module) -> dict[str, tuple[torch.dtype, list[int]]]:
    c = _collect(model)
    entries = {q.name: (torch.float32, list(q.latent.shape)) for q in c.quantized}
    for name, (t, _) in c.fp.items():
        entries[name] = (torch.float32 if t.is_floating_point() else t.dtype, list(t.shape))
    return entries


def paper_b_bits(
    model: nn.Module, bits: int, quantized: Iterable[str] | None = None, embed_bits: int | None = None
) -> dict:
    """Paper B's size convention (Tao et al. 2022): the word embedding and all Linear/Conv1D weights at `bits`,
    everything else (position embeddings, biases, LayerNorm, buffers) at 32 bits; ratio = fp32 bits / that.
    `quantized`: names actually quantized (default: the parametrized weights); the b-bit tensors of the
    convention that this model keeps in full precision are listed under `fp_here`. `embed_bits`: the word
    embedding's bits when they differ (paper B's W-E-A notation)."""
    from transformers.pytorch_utils import Conv1D

    c = _collect(model)
    quantized = set(quantized) if quantized is not None else {q.name for q in c.quantized}
    quantized |= {t for q in c.quantized if q.name in quantized for t in q.tied}
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    b_bit: dict[int, tuple[str, int, int]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        if not (isinstance(module, nn.Linear | Conv1D) or module is emb):
            continue
        w = module.parametrizations.weight.original if parametrize.is_parametrized(module, "weight") else module.weight
        b_bit.setdefault(id(w), (f"{mod_name}.weight", w.numel(), (embed_bits or bits) if module is emb else bits))
    total = sum(_numel(s) for _, s in _fp32_entries(model).values())
    n_b = sum(n for _, n, _ in b_bit.values())
    paper = sum(b * n for _, n, b in b_bit.values()) + 32 * (total - n_b)
    return {
        "bits": paper,
        "b_bit_params": n_b,
        "fp_params": total - n_b,
        "ratio": 32 * total / paper,
        "fp_here": sorted(name for name, _, _ in b_bit.values() if name not in quantized),
    }


def size_section(
    model: nn.Module,
    nominal_bits: int,
    path: str | Path | None = None,
    meta: Mapping | None = None,
    embed_bits: int | None = None,
) -> dict:
    """The `size` section of a record: packed size (of the file written to `path`, else computed exactly),
    effective bits per quantized weight, fp32 checkpoint size and the ratios."""
    tensors, metadata, counts = _pack(model, meta)
    if path is not None:
        packed = _write(tensors, metadata, Path(path))
    else:
        packed = safetensors_nbytes({k: (v.dtype, v.shape) for k, v in tensors.items()}, metadata)
    q = counts["quantized_params"]
    fp32 = fp32_bytes(model)
    paper = paper_b_bits(model, nominal_bits, embed_bits=embed_bits)
    return {
        "nominal_bits": nominal_bits,
        **({"embed_bits": embed_bits} if embed_bits not in (None, nominal_bits) else {}),
        "effective_bits": 8 * (counts["code_bytes"] + counts["side_bytes"]) / q if q else None,
        **counts,
        "header_bytes": packed - counts["code_bytes"] - counts["side_bytes"] - counts["fp_bytes"],
        "packed_bytes": packed,
        "packed_bytes_source": "file" if path is not None else "computed",
        "packed_file": str(path) if path is not None else None,
        "fp32_bytes": fp32,
        "ratio_fp32": fp32 / packed,
        "ratio_paper": paper["ratio"],
        "paper_b": paper,
    }


def run_size(model: nn.Module, scheme, cfg, task, run_dir: Path) -> dict:
    """The pipeline's hook: the record's size section; with cfg.export, also writes RUN_DIR/model.packed.safetensors."""
    meta = {"model": cfg.model.name, "task": task.name, "scheme": scheme.describe(), "order": cfg.train.order,
            "seed": cfg.seed}  # fmt: skip
    path = Path(run_dir) / PACKED_NAME if cfg.get("export") else None
    return size_section(model, scheme.bits, path, meta, getattr(scheme, "embed_bits", None))


def arch_model(model_cfg: Mapping, seed: int = 0) -> nn.Module:
    """The full-size model of a model yaml's `arch:` dict (else its `config:`, for tiny test models), randomly
    initialised, offline (no weights needed): family encoder -> AutoModelForSequenceClassification (2 labels),
    causal_lm -> AutoModelForCausalLM, seq2seq -> AutoModelForSeq2SeqLM."""
    import transformers
    from transformers import AutoConfig

    arch, family = model_cfg.get("arch") or model_cfg.get("config"), model_cfg.get("family", "encoder")
    if not arch:
        raise QbenchError(f"model={model_cfg.get('name')}: no `arch:` dict in its yaml; add the architecture's "
                          "shape fields (model_type, sizes) to size it offline")  # fmt: skip
    if family not in FAMILIES:
        raise QbenchError(f"model.family={family!r}; valid: {', '.join(FAMILIES)}")
    arch = dict(arch)
    kwargs = {"num_labels": 2} if family == "encoder" else {}
    torch.manual_seed(seed)
    return getattr(transformers, FAMILIES[family]).from_config(
        AutoConfig.for_model(arch.pop("model_type"), **arch, **kwargs)
    )


def size_table(s: dict, title: str = "") -> str:
    """Human-readable table of a size section; the last line is `ratio_fp32=<x> ratio_paper=<y>`."""
    q, fp = s["quantized_params"], s["fp_params"]
    mb = lambda b: f"{b / 2**20:10.2f}"
    rows = [
        ("quantized codes", q, s["code_bytes"], 8 * s["code_bytes"] / q if q else 0),
        ("quantized side info", None, s["side_bytes"], 8 * s["side_bytes"] / q if q else 0),
        ("full precision", fp, s["fp_bytes"], 8 * s["fp_bytes"] / fp if fp else 0),
        ("header + metadata", None, s["header_bytes"], None),
        (f"packed file ({s['packed_bytes_source']})", q + fp, s["packed_bytes"], 8 * s["packed_bytes"] / (q + fp)),
        ("fp32 safetensors file", q + fp, s["fp32_bytes"], 8 * s["fp32_bytes"] / (q + fp)),
    ]
    lines = [title] if title else []
    lines.append(f"{'part':26s} {'params':>13s} {'bytes':>13s} {'MiB':>10s} {'bits/param':>10s}")
    for name, n, b, bpp in rows:
        lines.append(f"{name:26s} {'' if n is None else f'{n:13,d}':>13s} {b:13,d} {mb(b)} "
                     f"{'' if bpp is None else f'{bpp:10.3f}':>10s}")  # fmt: skip
    p = s["paper_b"]
    lines.append(f"nominal bits {s['nominal_bits']}, effective bits per quantized weight {s['effective_bits']:.4f}")
    lines.append(f"ratio to fp32 file: {s['ratio_fp32']:.3f}x   paper B convention ({p['b_bit_params']:,d} params at "
                 f"{s['nominal_bits']} bits, {p['fp_params']:,d} at 32): {p['ratio']:.3f}x")  # fmt: skip
    if p["fp_here"]:
        lines.append(f"  (paper B counts at b bits, kept full precision here: {', '.join(p['fp_here'][:6])}"
                     f"{' ...' if len(p['fp_here']) > 6 else ''})")  # fmt: skip
    lines.append(f"ratio_fp32={s['ratio_fp32']:.2f} ratio_paper={s['ratio_paper']:.2f}")
    return "\n".join(lines)


def size_of_config(cfg, model: nn.Module | None = None) -> tuple[dict, str]:
    """`qbench size`: build cfg.model at full shape from its `arch:` (or take `model`, an unquantized copy of it),
    quantize it with cfg.scheme, pack it to a temporary file and return (size section, table)."""
    import tempfile

    from qbench.pipeline import build_scheme
    from qbench.quant.schemes import NoQuant
    from qbench.quant.wiring import quantize_model

    scheme = build_scheme(cfg)
    if isinstance(scheme, NoQuant):
        raise QbenchError("scheme=none: nothing is quantized; pick scheme=kmeans or scheme=linear")
    model = (model if model is not None else arch_model(cfg.model, cfg.seed)).eval()
    quantize_model(model, scheme, cfg.model.include, cfg.model.exclude)
    with tempfile.TemporaryDirectory() as d:
        s = size_section(model, scheme.bits, Path(d) / PACKED_NAME, {"model": cfg.model.name},
                         getattr(scheme, "embed_bits", None))  # fmt: skip
    s["packed_file"] = None  # it was temporary
    n = s["quantized_params"] + s["fp_params"]
    desc = ", ".join(f"{k}={v}" for k, v in scheme.describe().items() if k != "name")
    title = f"model={cfg.model.name} ({type(model).__name__}) scheme={scheme.name} ({desc}): {n:,d} weights"
    return s, size_table(s, title)


EXPORT_HELP = """usage: qbench export RUN_DIR

Write the packed low-bit checkpoint RUN_DIR/model.packed.safetensors of a completed quantized run.

A run keeps no model weights unless it was started with export=true (qbench run ... export=true writes the
packed file right after training). For a run without it, `qbench export` re-runs the run's resolved config
(RUN_DIR/record.json, else RUN_DIR/.hydra/config.yaml) with export=true in RUN_DIR: the model is rebuilt, quantized
and fine-tuned again with the same seed, and the new record.json (with the file's size) replaces the old one,
which is kept as record.before-export.json; the command prints both main metrics so a difference is visible.
If the packed file already exists, it is loaded back (to check it rebuilds the model) and its size is printed.
Load it in Python with qbench.export.load_packed(path)."""


def export_run(run_dir: str | Path) -> str:
    """`qbench export RUN_DIR` (see EXPORT_HELP); returns the lines to print."""
    from omegaconf import OmegaConf

    from qbench.pipeline import run

    run_dir = Path(run_dir)
    packed, rec_path, hydra_cfg = run_dir / PACKED_NAME, run_dir / "record.json", run_dir / ".hydra" / "config.yaml"
    record = json.loads(rec_path.read_text()) if rec_path.is_file() else None
    if packed.is_file():
        load_packed(packed)
        s = (record or {}).get("size") or {}
        ratio = f", ratio to fp32 {s['ratio_fp32']:.2f}x" if "ratio_fp32" in s else ""
        return f"already exported: {packed} ({packed.stat().st_size:,d} bytes{ratio}); it loads back"
    if record is not None:
        if record.get("status") != "completed":
            raise QbenchError(f"{rec_path}: status {record.get('status')!r}; only a completed run can be exported")
        cfg = OmegaConf.create(record["config"])
    elif hydra_cfg.is_file():
        cfg = OmegaConf.load(hydra_cfg)
    else:
        raise QbenchError(f"{run_dir}: no record.json or .hydra/config.yaml; not a qbench run directory")
    if str(cfg.scheme.get("_target_", "")).endswith("NoQuant"):
        raise QbenchError(f"{run_dir}: scheme=none, nothing is quantized; there is no packed checkpoint to write")
    cfg.export = True
    before = run_dir / "record.before-export.json"
    if record is not None:
        before.write_text(rec_path.read_text())
    try:
        new = run(cfg, run_dir)
    except BaseException:
        if record is not None:  # leave the run directory as it was
            rec_path.write_text(before.read_text())
            before.unlink()
        raise
    m, s = new["main_metric"], new["size"]
    lines = [f"re-ran {run_dir} with export=true: {packed} ({s['packed_bytes']:,d} bytes, "
             f"ratio to fp32 {s['ratio_fp32']:.2f}x, paper B {s['ratio_paper']:.2f}x)"]  # fmt: skip
    if record is not None:
        old = record["main_metric"]["value"]
        same = "same as" if old == m["value"] else "DIFFERS from"
        lines.append(f"{m['split']} {m['name']}={m['value']:.4f}, {same} the original record's {old:.4f} "
                     f"(kept as {before.name})")  # fmt: skip
    return "\n".join(lines)
