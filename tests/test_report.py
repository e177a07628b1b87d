"""`qbench table` / `qbench plot` on hand-made records; the table is compared with a golden file."""

import json
from pathlib import Path

import pytest

from qbench.cli import main
from qbench.report import load_records

GOLDEN = Path(__file__).parent / "golden"
CELLS = [  # (task, metric, scheme, bits, seed, value, effective bits)
    ("rte", "accuracy", "none", None, 1, 0.70, None),
    ("rte", "accuracy", "none", None, 2, 0.72, None),
    ("rte", "accuracy", "linear", 2, 1, 0.55, 2.5),
    ("rte", "accuracy", "linear", 2, 2, 0.57, 2.5),
    ("rte", "accuracy", "kmeans", 2, 1, 0.66, 2.0),
    ("rte", "accuracy", "kmeans", 8, 1, 0.71, 8.0),
    ("xsum", "rougeL", "mds", 2, 1, 0.30, 2.0),
    ("stsb", "spearman", "kmeans", 2, 1, 0.801, 2.0),
]


def write_records(root: Path) -> None:
    for i, (task, metric, scheme, bits, seed, value, eff) in enumerate(CELLS):
        d = root / f"cell{i}"
        d.mkdir(parents=True)
        rec = {"status": "completed", "model": "minilm", "task": task, "order": "qat", "seed": seed,
               "scheme": {"name": scheme, "bits": bits, "effective_bits": eff},
               "main_metric": {"name": metric, "split": "validation", "value": value}}  # fmt: skip
        (d / "record.json").write_text(json.dumps(rec))
    (root / "failed").mkdir()
    (root / "failed" / "record.json").write_text(json.dumps({"status": "failed", "error": "x"}))


@pytest.mark.parametrize("fmt, ext", [("markdown", "md"), ("csv", "csv"), ("latex", "tex")])
def test_table_matches_golden(tmp_path, capsys, fmt, ext):
    write_records(tmp_path)
    ref = GOLDEN / "reference.yaml"
    main(["table", str(tmp_path), "--format", fmt, "--reference", str(ref), "--digits", "1"])
    out = capsys.readouterr().out
    golden = GOLDEN / f"table.{ext}"
    assert out == golden.read_text(), out


def test_records_skip_failures_and_average_seeds(tmp_path):
    write_records(tmp_path)
    df = load_records([tmp_path])
    assert len(df) == len(CELLS)
    fp = df[(df.task == "rte") & (df.scheme == "none")]["value"]
    assert fp.mean() == pytest.approx(0.71)


def test_table_of_nothing_is_a_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["table", str(tmp_path)])
    assert e.value.code == 2 and "no completed record.json" in capsys.readouterr().err


def test_plot_writes_png_and_svg(tmp_path):
    write_records(tmp_path / "records")
    main(["plot", str(tmp_path / "records"), "--out", str(tmp_path / "plots" / "study")])
    for name in ("bits", "pareto"):
        for ext in ("png", "svg"):
            f = tmp_path / "plots" / f"study_{name}.{ext}"
            assert f.stat().st_size > 1000


def record(value: float, seed: int, model: str = "minilm", order: str = "ft_then_qat", scheme: str = "mds",
           lr: float = 5e-5, **config) -> dict:  # fmt: skip
    """A completed SST-2 record with its resolved config, as the pipeline writes it (the parts tables read)."""
    target = {"mds": "qbench.quant.mds.MDS", "none": "qbench.quant.schemes.NoQuant"}[scheme]
    cfg = {"model": {"name": model, "name_or_path": f"hub/{model}"},
           "task": {"name": "sst2", "mirror": "glue/sst2", "data_dir": None, "main_metric": "accuracy"},
           "scheme": {"_target_": target, **({"bits": 2} if scheme != "none" else {})},
           "train": {"order": order, "lr": lr, "logging_steps": 50},
           "distill": {"name": "none", "task_weight": 1.0, "kd_weight": 0.0, "tcd_weight": 0.0},
           "bits": 2, "seed": seed, "data_dir": "/data", "study": "s", "device": "auto", **config}  # fmt: skip
    return {"status": "completed", "model": model, "task": "sst2", "order": order, "seed": seed,
            "scheme": {"name": scheme, "bits": None if scheme == "none" else 2},
            "main_metric": {"name": "accuracy", "split": "validation", "value": value}, "config": cfg,
            "finished": f"2026-01-01T00:00:{seed:02d}"}  # fmt: skip


# seeds of one MiniLM configuration (written by two code versions, other folders and studies), a BERT ptq cell and
# a MiniLM cell with another learning rate in the same table cell, FP fine-tunes under two orders
TRAIN = {"order": "ft_then_qat", "lr": 5e-5}
MIXED = [
    record(0.82, 42, study="a", data_dir="/mirror/a"),
    record(0.80, 1, study="b", data_dir="/mirror/b", act_bits=None, train={**TRAIN, "qat": {"lr": None}}),
    record(0.50, 42, model="bert", order="ptq"),
    record(0.78, 42, lr=1e-4),
    record(0.86, 42, scheme="none"),
    record(0.84, 1, scheme="none", order="ptq"),
]
MIXED_TABLE = """\
| task   | metric   | FP         | mds 2b (model=bert, order=ptq, train.lr=5e-05)   | mds 2b (model=minilm, order=ft_then_qat, train.lr=0.0001)   | mds 2b (model=minilm, order=ft_then_qat, train.lr=5e-05)   |
|:-------|:---------|:-----------|:-------------------------------------------------|:------------------------------------------------------------|:-----------------------------------------------------------|
| sst2   | accuracy | 85.0 ± 1.4 | 50.0                                             | 78.0                                                        | 81.0 ± 1.4                                                 |
"""  # noqa: E501


def write(root: Path, records: list[dict]) -> None:
    for i, r in enumerate(records):
        (root / f"r{i}").mkdir(parents=True)
        (root / f"r{i}" / "record.json").write_text(json.dumps(r))


def test_seeds_are_averaged_only_within_one_configuration(tmp_path, capsys):
    write(tmp_path, MIXED)
    main(["table", str(tmp_path)])
    out = capsys.readouterr()
    assert out.out == MIXED_TABLE, out.out  # the old code: one "mds 2b" column, 72.5 ± 15.1
    assert "labelled by model, order, train.lr" in out.err and "--where" in out.err


def test_where_picks_one_configuration_and_fields_can_place_it(tmp_path, capsys):
    write(tmp_path, MIXED)
    main(["table", str(tmp_path), "--where", "model=minilm", "--where", "train.lr=5e-5", "--cols", "scheme"])
    out = capsys.readouterr()
    assert out.out.splitlines()[2] == "| sst2   | accuracy | 85.0 ± 1.4 | 81.0 ± 1.4 |" and not out.err
    main(["table", str(tmp_path), "--where", "model=minilm", "--rows", "train.lr", "--cols", "scheme"])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert rows == ["| 0.0001     | –          | 78.0       |", "| 5e-05      | 85.0 ± 1.4 | 81.0 ± 1.4 |"]


def test_where_scheme_matches_the_label_without_its_wea_bits(tmp_path, capsys):
    # paper B's cells are labelled 'mds 4-4-8' / 'mds+kd_tcd 4-4-8': scheme=mds found none of them
    wea = {"bits": 4, "wea": "4-4-8"}
    kd = {"name": "kd_tcd", "task_weight": 1.0, "kd_weight": 1.0, "tcd_weight": 0.1}
    plain, distilled = record(0.80, 42), record(0.70, 42, distill=kd)
    plain["scheme"].update(wea)
    distilled["scheme"].update(wea)
    distilled["distill"] = kd
    write(tmp_path, [plain, distilled, record(0.86, 42, scheme="none")])
    main(["table", str(tmp_path), "--where", "scheme=mds", "--where", "distill=none", "--cols", "scheme"])
    assert capsys.readouterr().out.splitlines()[2] == "| sst2   | accuracy | 80.0        |"
    main(["table", str(tmp_path), "--where", "scheme=mds+kd_tcd", "--cols", "scheme"])
    assert capsys.readouterr().out.splitlines()[0].split("|")[3].strip() == "mds+kd_tcd 4-4-8"


def test_the_same_run_found_twice_counts_once(tmp_path, capsys):
    write(tmp_path, [record(0.82, 42, study="a"), record(0.80, 42, study="b")])  # a rerun in another study
    main(["table", str(tmp_path)])
    assert capsys.readouterr().out.splitlines()[2] == "| sst2   | accuracy | 80.0     |"


def test_plot_draws_one_line_per_configuration(tmp_path):
    write(tmp_path / "records", MIXED)
    main(["plot", str(tmp_path / "records"), "--out", str(tmp_path / "study")])
    svg = (tmp_path / "study_bits.svg").read_text()
    assert "order=ptq, model=bert" in svg and "train.lr=0.0001" in svg


def test_a_ptq_line_reaching_8_bits_is_one_line(tmp_path):
    ptq_8 = record(0.88, 42, order="ptq", bits=8)
    ptq_8["scheme"]["bits"], ptq_8["config"]["scheme"]["bits"] = 8, 8
    write(tmp_path / "records", [record(0.80, 42), record(0.70, 42, order="ptq"), ptq_8])
    main(["plot", str(tmp_path / "records"), "--out", str(tmp_path / "study")])
    svg = (tmp_path / "study_bits.svg").read_text()
    labels = {line.strip() for line in svg.splitlines() if line.strip().startswith("<!-- mds")}
    # the old code drew the 8-bit point as a third line, 'mds', with no order (nothing differs at 8 bits alone)
    assert labels == {"<!-- mds (order=ft_then_qat) -->", "<!-- mds (order=ptq) -->"}, labels


def test_the_fp_fine_tune_is_shown_next_to_every_order(tmp_path, capsys):
    # the FP model is the same whichever order quantizes it; its records were written by cells of both orders
    write(tmp_path, [record(0.86, 42, scheme="none"), record(0.84, 1, scheme="none", order="ptq"),
                     record(0.80, 42), record(0.70, 42, order="ptq")])  # fmt: skip
    main(["table", str(tmp_path), "--rows", "task,order", "--cols", "scheme,bits"])
    rows = capsys.readouterr().out.splitlines()[2:]
    # the old code: FP 86.0 in the ft_then_qat row and 84.0 in the ptq row, each one seed
    assert rows == [
        "| sst2   | ft_then_qat | 85.0 ± 1.4 | 80.0     |",
        "| sst2   | ptq         | 85.0 ± 1.4 | 70.0     |",
    ]
    main(["table", str(tmp_path), "--where", "order=ptq"])
    assert capsys.readouterr().out.splitlines()[2] == "| sst2   | accuracy | 85.0 ± 1.4 | 70.0     |"


def test_a_folder_of_fp_fine_tunes_alone_tabulates_by_order(tmp_path, capsys):
    # FP records without quantized ones keep no order; the old code dropped their rows and printed an empty table
    write(tmp_path, [record(0.86, 42, scheme="none", order="ptq"), record(0.84, 1, scheme="none", order="ptq")])
    main(["table", str(tmp_path), "--rows", "task,order,seed"])
    assert capsys.readouterr().out.splitlines()[2:] == ["| sst2   | –       | 1      | 84.0 |",
                                                        "| sst2   | –       | 42     | 86.0 |"]  # fmt: skip


def test_the_fp_fine_tune_belongs_to_every_qat_setting(tmp_path, capsys):
    """An FP record written by a sweep at one train.qat.lr is the FP of every QAT learning rate: one FP column, and
    --where train.qat.lr=... keeps it."""
    qat = lambda lr: {**TRAIN, "qat": {"lr": lr}}  # noqa: E731
    write(tmp_path, [record(0.86, 42, scheme="none", train=qat(3e-4)), record(0.80, 42, train=qat(3e-4)),
                     record(0.70, 42, train=qat(1e-3))])  # fmt: skip
    main(["table", str(tmp_path), "--where", "train.qat.lr=0.001"])
    out = capsys.readouterr()
    assert out.out.splitlines()[2] == "| sst2   | accuracy | 86.0 | 70.0     |" and "train.qat.lr" not in out.err
    main(["table", str(tmp_path), "--cols", "scheme,train.qat.lr"])
    assert " ".join(capsys.readouterr().out.split()).startswith(
        "| task | metric | FP | mds 0.0003 | mds 0.001 | |:-------|:---------|:-----|:-------------|:------------| "
        "| sst2 | accuracy | 86.0 | 80.0 | 70.0 |"
    )


def test_effective_bits_table_has_the_metric_table_layout(tmp_path, capsys):
    write_records(tmp_path)
    main(["table", str(tmp_path), "--value", "effective_bits", "--digits", "2", "--where", "task=rte"])
    lines = capsys.readouterr().out.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == ["task", "metric", "FP", "kmeans 2b", "kmeans 8b",
                                                               "linear 2b"]  # fmt: skip
    # (two seeds of FP and of linear 2b: equal bits, no spread shown)
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == ["rte", "effective_bits", "32.00", "2.00", "8.00", "2.50"]


def test_fisher_weighted_kmeans_has_its_own_label():
    from qbench.report import scheme_label

    r = {"scheme": {"name": "kmeans", "bits": 2, "granularity": "row", "weighting": "fisher", "wea": "2-2-32"}}
    assert scheme_label(r) == "kmeans/row/fisher"
    assert scheme_label({"scheme": {"name": "kmeans", "bits": 2, "wea": "2-2-32"}}) == "kmeans"
    mixed = {"scheme": {"name": "kmeans", "bits": 3, "granularity": "row", "bits_by": {"*.0.*": 4}, "wea": "3-3-32"}}
    assert scheme_label(mixed) == "kmeans/row/mixed"  # its own column next to uniform 3-bit


def test_gptq_grids_have_their_own_labels():
    from qbench.report import scheme_label

    def gptq(**kw):
        return {"scheme": {"name": "gptq", "bits": 3, "grid": "linear", "group_size": None, "wea": "3-3-32", **kw}}

    assert scheme_label(gptq()) == "gptq"  # per row
    assert scheme_label(gptq(group_size=192)) == "gptq/group"
    assert scheme_label(gptq(grid="kmeans")) == "gptq/kmeans"
    assert scheme_label(gptq(group_size=192, act_order=True)) == "gptq/group/act"
    linear = {"scheme": {"name": "linear", "bits": 3, "granularity": "tensor", "group_size": 128, "wea": "3-3-32"}}
    assert scheme_label(linear) == "linear"  # paper A's label is untouched


def test_diverged_perplexities_print_in_scientific_notation():
    from qbench.report import cell

    assert cell(1.4727941598326428e19, float("nan"), 1, 1) == "1.5e+19"
    assert cell(541430.77, float("nan"), 1, 1) == "541430.8"  # below 1e6: as every other value
    assert cell(2.0e6, 1.0e6, 3, 1) == "2.0e+06 ± 1.0e+06"


def test_per_tensor_bits_are_one_field_in_the_label(tmp_path, capsys):
    """scheme.bits_by labels its column as one field, in its order (not one field per pattern)."""
    mixed = record(0.83, 42)
    mixed["config"]["scheme"]["bits_by"] = {"*.embeddings.*": 2, "*.layer.*": 4}
    write(tmp_path, [record(0.80, 42), mixed])
    main(["table", str(tmp_path)])
    out = capsys.readouterr()
    assert "mds 2b (scheme.bits_by=*.embeddings.*:2,*.layer.*:4)" in out.out and "labelled by scheme.bits_by" in out.err


def test_a_mixed_cell_budget_note_can_pick_and_place_its_records(tmp_path, capsys):
    """allocation (the budget `qbench allocate` met) is no part of the configuration, yet --where and --rows read
    it: two mixed cells from a code-bits and an effective-bits budget, one cell without the note (older records)."""
    cells = []
    for value, unit, by in ((0.83, "code", 4), (0.85, "effective", 3), (0.80, None, 2)):
        r = record(value, 42)
        r["config"]["scheme"]["bits_by"] = {"*.embeddings.*": 2, "*.layer.*": by}
        if unit:
            r["config"]["allocation"] = {"budget": 3.0, "unit": unit}
        cells.append(r)
    write(tmp_path, cells)
    main(["table", str(tmp_path), "--where", "allocation.unit=effective", "--cols", "scheme"])
    assert capsys.readouterr().out.splitlines()[2] == "| sst2   | accuracy | 85.0  |"
    main(["table", str(tmp_path), "--rows", "allocation.unit", "--cols", "scheme"])
    out = capsys.readouterr()
    assert out.out.splitlines()[2:] == ["| code              | 83.0  |", "| effective         | 85.0  |",
                                        "| null              | 80.0  |"], out.out  # fmt: skip
    assert load_records([tmp_path])["config"].map(lambda c: "allocation.unit" in c).sum() == 0  # not identity


def diagnosis(cosine: float, quantized: bool) -> dict:
    """A hand-made `diagnosis` section (qbench.diagnose): FP part, and for a quantized record its part and ranges."""
    part = lambda c: {layer: {"mean_cosine": c, "effective_rank": 10 * (1 - c)} for layer in ("embedding", "middle",
                                                                                            "last")}  # fmt: skip
    ranges = [{"name": "bert.embeddings.word_embeddings.weight", "layer": None, "module": "embedding",
               "max_over_mean": 12.0, "clip_over_mean": 3.0, "clip_over_mean_init": 2.5, "learned": {"gamma": 3.0}},
              {"name": "bert.encoder.layer.0.attention.self.query.weight", "layer": 0, "module": "attention.q",
               "max_over_mean": 8.0, "clip_over_mean": 2.0, "clip_over_mean_init": 2.2, "learned": {"gamma": 2.0}},
              {"name": "bert.encoder.layer.1.output.dense.weight", "layer": 1, "module": "ffn.out",
               "max_over_mean": 20.0}]  # fmt: skip
    sample = {"split": "validation", "tokens": 2048}
    return {"sample": sample, "fp": part(0.2), **({"quantized": part(cosine), "ranges": ranges} if quantized else {})}


def test_plot_draws_the_diagnosis_figures(tmp_path):
    records = [record(0.86, 42, scheme="none"), record(0.80, 42), record(0.78, 1), record(0.70, 42, lr=1e-4)]
    for r, c in zip(records, (0.2, 0.5, 0.6, 0.9), strict=True):
        r["diagnosis"] = diagnosis(c, r["scheme"]["name"] != "none")
    write(tmp_path / "records", [*records, record(0.75, 2)])  # a record written before the diagnosis: left out
    main(["plot", str(tmp_path / "records"), "--out", str(tmp_path / "study")])
    for name in ("homogeneity", "ranges"):
        for ext in ("png", "svg"):
            assert (tmp_path / f"study_{name}.{ext}").stat().st_size > 1000
    svg = (tmp_path / "study_homogeneity.svg").read_text()
    assert "last-layer states: mean pairwise cosine" in svg and "effective rank" in svg
    ranges = (tmp_path / "study_ranges.svg").read_text()
    assert "train.lr=0.0001" in ranges and "attention.q" in ranges and "ffn.out" in ranges  # one panel per line


def test_homogeneity_takes_fp_from_the_fp_records_and_averages_seeds():
    import pandas as pd

    from qbench.report import homogeneity_rows

    df = pd.DataFrame([
        {"task": "sst2", "scheme": "none", "series": "none", "run": "a", "diagnosis": diagnosis(0.2, False)},
        {"task": "sst2", "scheme": "mds", "series": "mds", "run": "b", "diagnosis": diagnosis(0.5, True)},
        {"task": "sst2", "scheme": "mds", "series": "mds", "run": "c", "diagnosis": diagnosis(0.7, True)},
        {"task": "rte", "scheme": "mds", "series": "mds", "run": "d", "diagnosis": diagnosis(0.9, True)},
    ])  # fmt: skip
    h = homogeneity_rows(df)
    cos = h[(h["layer"] == "last") & (h["measure"] == "mean_cosine")].groupby(["task", "method"])["value"].mean()
    # rte has no FP record: its FP bar is the quantized record's FP part
    assert cos.to_dict() == pytest.approx({("rte", "FP"): 0.2, ("rte", "mds"): 0.9, ("sst2", "FP"): 0.2,
                                           ("sst2", "mds"): 0.6})  # fmt: skip


def test_table_values_another_split_and_homogeneity(tmp_path, capsys):
    """--value metrics.SPLIT.NAME reads that split's metric (also_eval's 'wikitext2:test'), homogeneity.PART.MEASURE
    the final model's measure (an FP record's own); records without the value are left out; bad paths fail listing
    the valid forms."""
    records = [record(0.86, 42, scheme="none"), record(0.80, 42), record(0.78, 1), record(0.70, 42, lr=1e-4)]
    for r, (ppl, c) in zip(records, ((30.0, 0.2), (40.0, 0.5), (44.0, 0.6), (90.0, 0.9)), strict=True):
        r["metrics"] = {"validation": {"accuracy": r["main_metric"]["value"]}, "wikitext2:test": {"perplexity": ppl}}
        r["diagnosis"] = diagnosis(c, r["scheme"]["name"] != "none")
    write(tmp_path, [*records, record(0.75, 2)])  # an older record: no other split, no diagnosis
    main(["table", str(tmp_path), "--value", "metrics.wikitext2:test.perplexity"])
    out = capsys.readouterr().out
    assert "| sst2 | perplexity | 30.0 | 90.0 | 42.0 ± 2.8 |" in " ".join(out.split()), out
    main(["table", str(tmp_path), "--value", "homogeneity.last.mean_cosine", "--digits", "2"])
    out = capsys.readouterr().out
    assert "| sst2 | mean_cosine | 0.20 | 0.90 | 0.55 ± 0.07 |" in " ".join(out.split()), out
    for bad in ("metrics.test", "homogeneity.first.mean_cosine", "perplexity"):
        with pytest.raises(SystemExit) as e:
            main(["table", str(tmp_path), "--value", bad])
        assert e.value.code == 2 and "valid: metric, effective_bits, metrics.SPLIT.NAME" in capsys.readouterr().err


def test_plot_draws_the_task_loss_curves(tmp_path):
    """One line per record's last training stage, FP fine-tunes and quantized cells in panels of their own;
    distillation records contribute their task loss alone."""
    fp, plain, kd = record(0.86, 42, scheme="none"), record(0.80, 42), record(0.82, 42, lr=1e-4)
    fp["training"] = {"full_precision": {"loss_curve": [[1, 3.0], [2, 2.5]]}}
    plain["training"] = {"full_precision": {"loss_curve": [[1, 3.0]]}, "qat": {"loss_curve": [[1, 5.0], [2, 4.0]]}}
    kd["training"] = {"qat": {"loss_curve": [[1, 9.0], [2, 8.0]], "task_loss_curve": [[1, 4.5], [2, 3.5]]}}
    write(tmp_path / "records", [fp, plain, kd, record(0.75, 2)])  # the last logged no curve: no line
    df = load_records([tmp_path / "records"])
    curves = {r["value"]: r["curves"] for _, r in df.iterrows()}
    assert curves == {0.86: {"full_precision": [[1, 3.0], [2, 2.5]]}, 0.75: {},
                      0.80: {"full_precision": [[1, 3.0]], "qat": [[1, 5.0], [2, 4.0]]},
                      0.82: {"qat": [[1, 4.5], [2, 3.5]]}}  # fmt: skip
    main(["plot", str(tmp_path / "records"), "--out", str(tmp_path / "study")])
    svg = (tmp_path / "study_loss.svg").read_text()
    assert "sst2: training loss, FP fine-tune" in svg and "sst2: training loss, quantized, last stage" in svg
    assert "train.lr=0.0001" in svg and "FP" in svg
    write(tmp_path / "qat", [plain, kd])  # quantized cells alone: one row
    main(["plot", str(tmp_path / "qat"), "--out", str(tmp_path / "qat_only")])
    svg = (tmp_path / "qat_only_loss.svg").read_text()
    assert "quantized, last stage" in svg and "FP fine-tune" not in svg
