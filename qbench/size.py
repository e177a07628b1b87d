"""Size accounting of a quantized model, read from what the packer writes (qbench.quant.checkpoint.pack).

- `size_section(model, bits, path)`: the record's `size`: bytes of the packed checkpoint (the file written to
  `path`, else computed exactly without writing), its parts (codes, side tensors, full-precision tensors, header),
  effective bits per quantized weight, the fp32 checkpoint's bytes and the compression ratios.
- `fp32_bytes(model)`: the size of an fp32 safetensors checkpoint of the same model (tied tensors once, as
  save_pretrained writes it).
- `paper_b_bits`: paper B's convention (Tao et al. 2022): the word embedding and every Linear/Conv1D weight at b
  bits, everything else (position embeddings, biases, LayerNorm, ...) at 32 bits.
- `size_of_model`: `qbench size`'s report of a model quantized with a scheme.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize
from transformers.pytorch_utils import Conv1D

from qbench.quant.checkpoint import PACKED_NAME, collect, pack, write_file
from qbench.quant.schemes import Scheme
from qbench.quant.wiring import quantize_model

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


def fp32_bytes(model: nn.Module) -> int:
    """Bytes of an fp32 safetensors checkpoint of the same model (quantized weights at full shape, tied tensors
    once, latent copies and quantizer state not counted; metadata {'format': 'pt'} as save_pretrained writes)."""
    return safetensors_nbytes(_fp32_entries(model), {"format": "pt"})


def _fp32_entries(model: nn.Module) -> dict[str, tuple[torch.dtype, list[int]]]:
    c = collect(model)
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
    embedding's bits when they differ (paper B's W-E-A notation). A quantized tensor counts at its quantizer's own
    bits (the same as these unless scheme.bits_by set them per tensor)."""
    c = collect(model)
    quantized = set(quantized) if quantized is not None else {q.name for q in c.quantized}
    quantized |= {t for q in c.quantized if q.name in quantized for t in q.tied}
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    b_bit: dict[int, tuple[str, int, int]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        if not (isinstance(module, nn.Linear | Conv1D) or module is emb):
            continue
        quantized_here = parametrize.is_parametrized(module, "weight")
        w = module.parametrizations.weight.original if quantized_here else module.weight
        b = (embed_bits or bits) if module is emb else bits
        b = module.parametrizations.weight[0].bits if quantized_here else b  # its own bits (scheme.bits_by)
        b_bit.setdefault(id(w), (f"{mod_name}.weight", w.numel(), b))
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
    tensors, metadata, counts = pack(model, meta)
    if path is not None:
        packed = write_file(tensors, metadata, Path(path))
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


def size_of_model(
    model: nn.Module, scheme: Scheme, include: list[str], exclude: list[str], name: str
) -> tuple[dict, str]:
    """`qbench size`: quantize `model` (unquantized, e.g. models.arch_model) in place with `scheme`, pack it to a
    temporary file and return (size section, table)."""
    quantize_model(model.eval(), scheme, include, exclude)
    with tempfile.TemporaryDirectory() as d:
        s = size_section(model, scheme.bits, Path(d) / PACKED_NAME, {"model": name}, scheme.embed_bits)
    s["packed_file"] = None  # it was temporary
    n = s["quantized_params"] + s["fp_params"]
    desc = ", ".join(f"{k}={v}" for k, v in scheme.describe().items() if k != "name")
    title = f"model={name} ({type(model).__name__}) scheme={scheme.name} ({desc}): {n:,d} weights"
    return s, size_table(s, title)
