"""Size accounting (qbench.size): exact safetensors sizes, the fp32 reference, the record's size section."""

import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save, save_file

from qbench.quant.checkpoint import PACKED_NAME
from qbench.quant.kmeans import KMeans
from qbench.quant.wiring import quantize_model
from qbench.size import fp32_bytes, paper_b_bits, safetensors_nbytes, size_section
from tests.tiny import tiny_bert, tiny_gpt2

GPT2_INCLUDE = ["*transformer.wte.weight", "*transformer.h.*"]  # lm_head (tied to wte) deliberately not named


def test_safetensors_nbytes_is_exact():
    u8, i64, f16 = torch.uint8, torch.int64, torch.float16
    tensors = {"zz": torch.zeros(3, dtype=u8), "a.b": torch.zeros(2, 5), "m": torch.zeros(7, dtype=u8),
               "i": torch.zeros(4, dtype=i64), "h": torch.zeros(3, dtype=f16)}  # fmt: skip
    for md in ({}, {"format": "pt", "x": 'quote " and ünïcode'}):
        entries = {k: (v.dtype, v.shape) for k, v in tensors.items()}
        assert safetensors_nbytes(entries, md) == len(save(tensors, metadata=md or None))


def test_fp32_bytes_is_the_fp32_checkpoint(tmp_path):
    model = tiny_bert()
    save_file(model.state_dict(), str(tmp_path / "fp32.safetensors"), metadata={"format": "pt"})
    expected = (tmp_path / "fp32.safetensors").stat().st_size
    assert fp32_bytes(model) == expected
    quantize_model(model, KMeans(bits=2), ["*.embeddings.*", "*.encoder.*"], [])
    assert fp32_bytes(model) == expected  # same model, quantized: latents and codebooks are not counted


def test_size_section_computed_equals_file_and_paper_b():
    model = tiny_gpt2()
    n_total = sum(p.numel() for p in model.parameters())
    quantize_model(model, KMeans(bits=2), GPT2_INCLUDE, [])
    s = size_section(model, 2, None, {"a": 1})
    with tempfile.TemporaryDirectory() as d:
        f = size_section(model, 2, Path(d) / PACKED_NAME, {"a": 1})
        assert f["packed_bytes"] == (Path(d) / PACKED_NAME).stat().st_size
    assert s["packed_bytes"] == f["packed_bytes"] and s["packed_bytes_source"] == "computed"
    q = 100 * 32 + 2 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32)
    assert s["quantized_params"] == q and s["fp_params"] == n_total - q
    assert s["code_bytes"] == q * 2 // 8  # every tensor's size is a multiple of 4
    assert s["side_bytes"] == 9 * 4 * 4 and s["effective_bits"] == 8 * (s["code_bytes"] + s["side_bytes"]) / q
    p = paper_b_bits(model, 2)
    assert p["b_bit_params"] == q and p["fp_here"] == []
    assert p["ratio"] == pytest.approx(32 * n_total / (2 * q + 32 * (n_total - q)))
    assert s["ratio_fp32"] == s["fp32_bytes"] / s["packed_bytes"] and s["ratio_paper"] == p["ratio"]


@pytest.mark.parametrize("granularity", ["row", "group"])
def test_kmeans_row_and_group_side_bits_are_their_centroid_tables(tmp_path, granularity):
    from qbench.quant.schemes import as_2d

    model = tiny_gpt2()
    quantize_model(model, KMeans(bits=2, granularity=granularity, group_size=16), GPT2_INCLUDE, [])
    s = size_section(model, 2, tmp_path / PACKED_NAME)
    tables, n = 0, 0
    for name, module in model.named_modules():
        if hasattr(module, "parametrizations") and name != "lm_head":
            w = module.parametrizations.weight.original
            rows, cols = as_2d(w, name.endswith(("c_attn", "c_proj", "c_fc"))).shape
            tables += 4 * (rows if granularity == "row" else rows * cols // 16)  # 4 centroids each
            n += w.numel()
    assert s["side_bytes"] == 4 * tables and s["quantized_params"] == n
    assert s["effective_bits"] == pytest.approx((2 * n + 32 * tables) / n, rel=1e-3)  # codes rounded to bytes
    assert s["packed_bytes"] == (tmp_path / PACKED_NAME).stat().st_size


def test_nf4_side_bits_are_block_scales_and_codebook(tmp_path):
    from qbench.quant.nf4 import NF4

    model = tiny_gpt2()
    quantize_model(model, NF4(bits=4, block_size=64), GPT2_INCLUDE, [])
    s = size_section(model, 4, tmp_path / PACKED_NAME)
    tensors = [m.parametrizations.weight.original for n, m in model.named_modules()
               if hasattr(m, "parametrizations") and n != "lm_head"]  # fmt: skip
    side = sum(4 * (-(-w.numel() // 64) + 16) for w in tensors)  # fp32 absmax per block + the 16-entry codebook
    assert s["side_bytes"] == side and s["quantized_params"] == sum(w.numel() for w in tensors)
