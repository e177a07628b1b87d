"""Paper B's diagnosis (qbench.diagnose): the measures on hand-computed matrices, the names parsed, the learned ranges
of each scaled scheme, and the record's section end to end (classification and causal LM, tiny models, real data)."""

import math

import pytest
import torch
from torch import nn

from qbench.diagnose import (
    distinct_rows,
    effective_rank,
    frequent_tokens,
    mean_cosine,
    module_of,
    module_ranges,
    range_stats,
    sample_inputs,
)
from qbench.quant.laq import LAQ
from qbench.quant.linear import Linear
from qbench.quant.lsq import LSQ
from qbench.quant.mds import MDS
from qbench.quant.pact import PACT
from qbench.quant.wiring import quantize_model


def test_identical_rows_are_one_row_with_cosine_1_and_no_spread():
    x = torch.tensor([[1.0, 2.0, 3.0]]).repeat(5, 1)
    assert mean_cosine(x) == pytest.approx(1.0) and distinct_rows(x) == 1 and effective_rank(x) == 0.0


def test_orthonormal_rows_have_cosine_0():
    x = torch.eye(4)
    assert mean_cosine(x) == pytest.approx(0.0) and distinct_rows(x) == 4
    # centred, the 4 rows span 3 directions with equal singular values: exp(log 3) = 3
    assert effective_rank(x) == pytest.approx(3.0)


def test_mean_cosine_excludes_the_diagonal():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # pairs: 1, 0, 0 (each twice)
    assert mean_cosine(x) == pytest.approx(1 / 3)
    assert mean_cosine(torch.tensor([[1.0, 0.0], [-2.0, 0.0]])) == pytest.approx(-1.0)


def test_effective_rank_ignores_a_shared_offset_and_the_scale():
    torch.manual_seed(0)
    x = torch.randn(200, 8)
    shifted = 100 + 3 * x  # every cosine near 1: the common direction dominates
    assert mean_cosine(shifted) > 0.99 > 0.1 > abs(mean_cosine(x))
    assert effective_rank(shifted) == pytest.approx(effective_rank(x), rel=1e-6)
    assert 7 < effective_rank(x) <= 8
    two = torch.cat([x[:, :2], torch.zeros(200, 6)], 1)  # spread over 2 directions only
    assert effective_rank(two) < 2 + 1e-9


def test_range_stats():
    s = range_stats(torch.tensor([1.0, -1.0, 2.0, -4.0]))
    assert (s["max_abs"], s["mean_abs"], s["max_over_mean"]) == (4.0, 2.0, 2.0)


@pytest.mark.parametrize("name, expected", [
    ("bert.embeddings.word_embeddings.weight", (None, "embedding")),
    ("bert.encoder.layer.3.attention.self.query.weight", (3, "attention.q")),
    ("bert.encoder.layer.3.attention.self.value.weight", (3, "attention.v")),
    ("bert.encoder.layer.0.attention.output.dense.weight", (0, "attention.o")),
    ("bert.encoder.layer.5.intermediate.dense.weight", (5, "ffn.in")),
    ("bert.encoder.layer.5.output.dense.weight", (5, "ffn.out")),
    ("transformer.wte.weight", (None, "embedding")),
    ("transformer.h.1.attn.c_attn.weight", (1, "attention.qkv")),
    ("transformer.h.1.attn.c_proj.weight", (1, "attention.o")),
    ("transformer.h.1.mlp.c_fc.weight", (1, "ffn.in")),
    ("transformer.h.1.mlp.c_proj.weight", (1, "ffn.out")),
    ("model.layers.7.self_attn.k_proj.weight", (7, "attention.k")),
    ("model.layers.7.mlp.down_proj.weight", (7, "ffn.out")),
    ("model.decoder.layers.2.encoder_attn.out_proj.weight", (2, "attention.o")),
    ("model.decoder.layers.2.fc1.weight", (2, "ffn.in")),
])  # fmt: skip
def test_module_of_parses_layer_and_type(name, expected):
    assert module_of(name) == expected


@pytest.mark.parametrize("scheme, learned", [(PACT(bits=2), "alpha"), (LSQ(bits=2), "s"), (MDS(bits=2), "gamma"),
                                             (LAQ(bits=2), "alpha"), (Linear(bits=2), None)])  # fmt: skip
def test_module_ranges_report_each_schemes_learned_clip(scheme, learned):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 4))
    with torch.no_grad():
        model[0].weight[0, 0] = 5.0  # an outlier: max|w| / mean|w| well above the clip
    quantize_model(model, scheme, ["*"], [])
    model(torch.randn(2, 16))  # LAQ fits its α in the forward pass
    ranges = module_ranges(model)
    assert [r["name"] for r in ranges] == ["0.weight", "1.weight"]
    w = model[0].parametrizations.weight.original.detach()
    assert ranges[0]["max_over_mean"] == pytest.approx(5.0 / w.abs().mean().item())
    if learned is None:
        assert "clip_over_mean" not in ranges[0]
        return
    r = ranges[0]
    assert set(r["learned"]) >= {learned} and 0 < r["clip_over_mean"] <= r["max_over_mean"] + 1e-6
    if learned == "gamma":  # MDS's clip is γ·mean|w|, so γ is its clip over mean|w|
        assert r["clip_over_mean"] == pytest.approx(r["learned"]["gamma"])
    if isinstance(scheme, PACT):  # at 2 bits the largest level is α
        assert r["clip_over_mean"] * w.abs().mean().item() == pytest.approx(r["learned"]["alpha"])


class Tok:
    all_special_ids = [0, 1]
    eos_token_id, bos_token_id = 1, 0


def test_the_sample_covers_n_tokens_without_special_ones():
    from datasets import Dataset

    rows = Dataset.from_dict({"input_ids": [[0, 5, 6, 1], [0, 7, 1], [0, 8, 9, 1]], "label": [1, 0, 1]})
    assert sample_inputs(rows, Tok(), False, n=3) == [{"input_ids": [0, 5, 6, 1]}, {"input_ids": [0, 7, 1]}]
    seq = [0, *range(2, 12)]  # a causal LM split: one sequence, chunked
    assert sample_inputs(seq, Tok(), False, chunk=4, n=6) == [{"input_ids": [0, 2, 3, 4]}, {"input_ids": [5, 6, 7, 8]}]
    s2s = Dataset.from_dict({"input_ids": [[0, 5, 1]], "labels": [[0, 7, 8, 1]]})
    assert sample_inputs(s2s, Tok(), True, n=1)[0]["decoder_input_ids"] == [1, 0, 7, 8]  # the summary, shifted
    counts = Dataset.from_dict({"input_ids": [[0, 9, 5, 5, 9, 7, 1]]})
    assert frequent_tokens(counts, Tok(), k=2) == [5, 9]  # ties: lower id first


def check_section(d: dict, quantized: bool) -> None:
    assert d["sample"]["tokens"] > 100 and d["sample"]["embedding_rows"] > 10
    for part in ("fp", "quantized") if quantized else ("fp",):
        m = d[part]
        for layer in ("embedding", "last", "middle"):
            assert -1 <= m[layer]["mean_cosine"] <= 1 and 1 <= m[layer]["effective_rank"] <= 64
        assert 1 <= m["embedding"]["distinct_rows"] <= d["sample"]["embedding_rows"]
        assert m["embedding"]["distinct_rows_vocab"] <= m["embedding"]["vocab"]
    assert ("quantized" in d) == ("ranges" in d) == quantized


def test_every_record_has_the_diagnosis(tmp_path, data_dir, monkeypatch):
    from qbench.pipeline import run
    from tests.test_pipeline import cell

    monkeypatch.setenv("QBENCH_DATA_DIR", str(data_dir))
    fp = run(cell(tmp_path, "scheme=none"), tmp_path / "fp")
    check_section(fp["diagnosis"], quantized=False)
    assert fp["timings"]["diagnose"] > 0
    q = run(cell(tmp_path, "scheme=mds", "train.order=ft_then_qat", "embed_bits=2"), tmp_path / "mds")
    d = q["diagnosis"]
    check_section(d, quantized=True)
    assert d["fp"] == fp["diagnosis"]["fp"]  # the same FP fine-tune, the same tokens
    assert d["sample"] == fp["diagnosis"]["sample"] and d["sample"]["split"] == "validation"
    assert d["quantized"] != d["fp"]
    assert len(d["ranges"]) == q["scheme"]["quantized_tensors"]
    types = {r["module"] for r in d["ranges"]}
    assert {"embedding", "attention.q", "attention.k", "attention.v", "attention.o", "ffn.in", "ffn.out"} <= types
    for r in d["ranges"]:
        assert r["clip_over_mean"] == pytest.approx(r["learned"]["gamma"]) and math.isfinite(r["clip_over_mean_init"])
        assert r["max_over_mean"] >= 1


def test_a_causal_lm_record_has_the_diagnosis(tmp_path):
    from tests.kinds.generative_cli import DATA, DEBUG, qbench, record

    ptb = tmp_path / "ptb"
    ptb.mkdir()
    for name, n in [("train.txt", 200), ("valid.txt", 40), ("test.txt", 40)]:
        lines = (DATA / "lm" / "ptb" / name).read_text().splitlines()[:n]
        (ptb / name).write_text("\n".join(lines) + "\n")
    qbench(tmp_path, "model=tiny_gpt2", "task=ptb", f"task.data_dir={ptb}", "scheme=pact", "bits=2", *DEBUG,
           "train.max_length=64", "train.max_train_examples=16")  # fmt: skip
    d = record(tmp_path)["diagnosis"]
    check_section(d, quantized=True)
    assert d["sample"]["split"] == "test" and d["sample"]["layers"] == 2 and d["sample"]["middle_layer"] == 1
    assert d["sample"]["forward_passes"] >= d["sample"]["tokens"] / 128  # chunks of the model's 128-token context
    assert {r["name"] for r in d["ranges"]} >= {"transformer.wte.weight", "transformer.h.0.attn.c_attn.weight"}
    assert all(r["learned"]["alpha"] > 0 for r in d["ranges"])


def test_an_encoder_decoder_is_read_through_its_decoder():
    from datasets import Dataset

    from qbench.diagnose import homogeneity
    from tests.tiny import tiny_bart

    model = tiny_bart()
    model.config.decoder_start_token_id = 1
    rows = Dataset.from_dict({"input_ids": [[0, *range(10, 40), 1]] * 3, "labels": [[0, *range(50, 70), 1]] * 3})
    d = homogeneity(model, Tok(), rows, n=40)
    assert d["sample"]["tokens"] == 40 and d["sample"]["forward_passes"] == 2  # 21 summary tokens per example
    assert d["sample"]["layers"] == 1 and d["sample"]["embedding_rows"] == 30  # counted on the documents (10..39)
    assert not model.training


def test_range_moves_sum_up_the_relative_change_of_each_learned_value():
    from qbench.diagnose import range_moves

    ranges = [  # end values, with the start ones (learned_init) as with_init leaves them
        {"name": "a", "learned": {"gamma": 3.3, "alpha": 0.5}, "learned_init": {"gamma": 3.0, "alpha": 0.4}},
        {"name": "b", "learned": {"gamma": 2.0, "alpha": 0.1}, "learned_init": {"gamma": 4.0, "alpha": 0.1}},
        {"name": "c", "learned": {"gamma": 5.0}, "learned_init": {"gamma": 5.0}},
        {"name": "d", "max_over_mean": 7.0},  # a scheme without a learned range
    ]
    moves = range_moves(ranges)
    assert moves["gamma"] == {"median": pytest.approx(0.1), "max": pytest.approx(0.5), "tensors": 3}
    assert moves["alpha"] == {"median": pytest.approx(0.125), "max": pytest.approx(0.25), "tensors": 2}
    assert range_moves([{"name": "d", "max_over_mean": 7.0}]) == {}
