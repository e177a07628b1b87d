"""qbench.claims: the bootstrap's metrics match qbench.tasks', known effects are found and absent ones are not,
pairing tightens the interval, Holm's adjustment, and `qbench claims` on hand-made records."""

import json
from pathlib import Path

import numpy as np
import pytest

from qbench.claims import Arm, compare, draws, holm, majority, parse_claims, values, verdict, weighted_ranks
from qbench.cli import main
from qbench.errors import QbenchError
from qbench.tasks import metric


def test_metrics_at_unit_weights_match_qbench_tasks():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    y3, p3 = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    ys, ps = rng.integers(0, 6, 200) / 5.0, rng.normal(size=200).round(1)  # STS-B-like labels, tied scores
    ones = np.ones((1, 200))
    for name, yy, pp in [("accuracy", y, p), ("f1", y, p), ("matthews", y, p), ("matthews", y3, p3),
                         ("pearson", ys, ps), ("spearman", ys, ps)]:  # fmt: skip
        got = values(name, ones, {"label": yy, "prediction": pp})[0]
        assert got == pytest.approx(100 * metric(name, yy, pp), abs=1e-9), name


def test_weights_equal_an_explicit_resample():
    """A row of draw counts scores what the resampled arrays score (copies of an example share a rank)."""
    rng = np.random.default_rng(1)
    ys, ps, y, p = rng.integers(0, 6, 50) / 5.0, rng.normal(size=50), rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    idx = rng.integers(0, 50, 50)
    w = np.bincount(idx, minlength=50)[None].astype(float)
    for name, yy, pp in [("spearman", ys, ps), ("pearson", ys, ps), ("matthews", y, p), ("f1", y, p)]:
        got = values(name, w, {"label": yy, "prediction": pp})[0]
        assert got == pytest.approx(100 * metric(name, yy[idx], pp[idx]), abs=1e-9), name
    from scipy.stats import rankdata

    assert np.allclose(weighted_ranks(w, ys)[0][idx], rankdata(ys[idx]))


def test_perplexity_from_window_sums():
    cols = {"nll": np.array([10.0, 30.0]), "scored": np.array([5, 10]), "correct": np.array([1, 4])}
    w = np.array([[1.0, 1.0], [2.0, 0.0]])
    assert values("perplexity", w, cols) == pytest.approx([np.exp(40 / 15), np.exp(2.0)])
    assert values("token_accuracy", w, cols) == pytest.approx([100 * 5 / 15, 100 * 1 / 5])


def synthetic(name: str, labels: np.ndarray, accuracy: dict[int, float], rng) -> Arm:
    """An arm whose seed s predicts each label right with probability accuracy[s]."""
    arm = Arm(name, "accuracy", list(range(len(labels))))
    for s, acc in accuracy.items():
        right = rng.random(len(labels)) < acc
        arm.data[s] = {"label": labels, "prediction": np.where(right, labels, 1 - labels)}
    return arm


def result(a: Arm, b: Arm, direction: str = ">", resamples: int = 2000) -> tuple[dict, str]:
    from qbench.claims import Claim

    r = compare(a, b, resamples=resamples, rng=np.random.default_rng(0))
    return r, verdict(Claim("c", ("x",), ("y",), direction), r["effect"], holm([r["p"]])[0], 0.05)


def test_known_effect_is_found_none_is_not_opposite_does_not_hold():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 800)
    good = synthetic("good", labels, {1: 0.85, 2: 0.86, 3: 0.84}, rng)
    bad = synthetic("bad", labels, {1: 0.75, 2: 0.76, 3: 0.74}, rng)
    same = synthetic("same", labels, {1: 0.85, 2: 0.86, 3: 0.84}, rng)
    r, v = result(good, bad)
    assert v == "holds" and r["low"] > 0 and r["p"] < 0.01 and r["seeds"] == "3 paired"
    assert r["effect"] == pytest.approx(r["mean_a"] - r["mean_b"]) and 8 < r["effect"] < 12
    r, v = result(good, same)
    assert v == "not enough evidence" and r["low"] < 0 < r["high"] and r["p"] > 0.05
    assert result(bad, good)[1] == "does not hold"  # claimed bad > good
    assert result(bad, good, "<")[1] == "holds"


def test_one_seed_is_a_bootstrap_over_examples():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    r, v = result(synthetic("a", labels, {42: 0.9}, rng), synthetic("b", labels, {42: 0.7}, rng))
    assert r["seeds"] == "1" and v == "holds" and r["high"] - r["low"] > 0


def test_majority_of_a_regression_arm_is_a_constant_at_correlation_zero():
    """STS-B's baseline: the constant predictor (the mean label) scores 0; an arm that tracks the labels beats it,
    one that does not ties with it. Classification: the most common label, as before."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 26, 500) / 5.0  # STS-B-like scores 0..5
    tracks = Arm("a", "spearman", list(range(500)), {s: {"label": y, "prediction": y + rng.normal(0, 2, 500)}
                                                        for s in (1, 2, 3)})  # fmt: skip
    noise = Arm("n", "spearman", tracks.keys, {s: {"label": y, "prediction": rng.normal(size=500)} for s in (1, 2, 3)})
    const = majority(tracks)
    assert [len(np.unique(c["prediction"])) for c in const.data.values()] == [1, 1, 1]
    assert const.data[1]["prediction"][0] == pytest.approx(y.mean())
    r, v = result(tracks, const)
    assert r["mean_b"] == 0.0 and v == "holds" and r["effect"] == pytest.approx(r["mean_a"]) and r["low"] > 20
    assert result(noise, majority(noise))[1] == "not enough evidence"
    assert r["collapsed"] == ("", "constant")  # a single score, not a class
    labels = np.array([0, 1, 1, 1])
    cls = Arm("c", "accuracy", [0, 1, 2, 3], {7: {"label": labels, "prediction": labels}})
    assert majority(cls).data[7]["prediction"].tolist() == [1, 1, 1, 1]
    assert compare(cls, majority(cls), resamples=10)["collapsed"] == ("", "one class")
    with pytest.raises(QbenchError, match="constant predictor has no perplexity"):
        majority(Arm("lm", "perplexity", [0], {1: {"nll": np.ones(1), "scored": np.ones(1), "correct": np.ones(1)}}))


def test_pairing_over_seeds_tightens_the_interval():
    """Seeds that move both arms alike: paired, the difference is steady; unpaired (no seed in common), the seeds'
    spread enters the interval."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 600)
    quality = {1: 0.95, 2: 0.75, 3: 0.55}
    a = synthetic("a", labels, quality, rng)
    b = Arm("b", "accuracy", a.keys, {s: {"label": labels, "prediction": c["prediction"].copy()}
                                      for s, c in a.data.items()})  # fmt: skip
    for c in b.data.values():  # b = a with 30 right answers made wrong
        right = np.flatnonzero(c["prediction"] == labels)[:30]
        c["prediction"][right] = 1 - labels[right]
    unpaired = Arm("b", "accuracy", a.keys, {s + 10: c for s, c in b.data.items()})
    paired, apart = result(a, b)[0], result(a, unpaired)[0]
    assert apart["seeds"] == "3 | 3 unpaired" and paired["effect"] == pytest.approx(apart["effect"])
    assert 5 * (paired["high"] - paired["low"]) < apart["high"] - apart["low"]


def test_draws_count_every_item_once_per_draw():
    w = draws(np.random.default_rng(0), 7, 11)
    assert w.shape == (7, 11) and (w.sum(1) == 11).all()


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    p = list(np.random.default_rng(5).random(20) / 10)
    adj = holm(p)
    order = np.argsort(p)
    assert all(x >= y for x, y in zip(adj, p, strict=True))  # never below the raw p
    assert all(np.diff(np.asarray(adj)[order]) >= 0) and max(adj) <= 1  # monotone in p


def test_claims_file_expands_each_and_rejects_unknown_keys():
    text = """claims:
  - label: "{task}: kmeans > FP"
    each: {task: [sst2, rte]}
    where: {task: "{task}", bits: 2}
    a: {scheme: kmeans}
    b: {scheme: none, bits: null}
  - {label: "vs majority", a: {scheme: kmeans}, b: majority, direction: "<", threshold: -1}
"""
    claims, alpha = parse_claims(text)
    assert alpha == 0.05 and [c.label for c in claims] == ["sst2: kmeans > FP", "rte: kmeans > FP", "vs majority"]
    assert claims[0].a == ("bits=2", "scheme=kmeans", "task=sst2") and claims[0].b == ("scheme=none", "task=sst2")
    assert claims[2].b == "majority" and claims[2].threshold == -1
    with pytest.raises(QbenchError, match="valid: a, b, direction"):
        parse_claims("claims: [{label: x, a: {}, b: {}, arms: 2}]")
    with pytest.raises(QbenchError, match="direction"):
        parse_claims("claims: [{label: x, a: {}, b: {}, direction: '>='}]")


def write_cell(root: Path, name: str, scheme: str, bits, seed: int, labels: np.ndarray, preds: np.ndarray,
               value: float | None = None) -> None:  # fmt: skip
    d = root / name
    d.mkdir(parents=True)
    acc = float((labels == preds).mean()) if value is None else value
    rec = {"status": "completed", "model": "minilm", "task": "rte", "order": "ptq", "seed": seed,
           "scheme": {"name": scheme, "bits": bits},
           "main_metric": {"name": "accuracy", "split": "validation", "value": acc}}  # fmt: skip
    (d / "record.json").write_text(json.dumps(rec))
    rows = [{"split": "validation", "idx": i, "label": int(y), "prediction": int(p)}
            for i, (y, p) in enumerate(zip(labels, preds, strict=True))]  # fmt: skip
    rows.append({"split": "test", "idx": 0, "label": -1, "prediction": 0})  # another split: left out
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def study(root: Path) -> None:
    """FP and 2-bit k-means clearly above majority; 2-bit linear predicts class 0 everywhere; 3 seeds."""
    rng = np.random.default_rng(6)
    labels = (rng.random(300) < 0.6).astype(int)  # majority class 1
    for seed in (1, 2, 3):
        noisy = lambda acc: np.where(rng.random(300) < acc, labels, 1 - labels)  # noqa: E731
        write_cell(root, f"fp{seed}", "none", None, seed, labels, noisy(0.9))
        write_cell(root, f"km{seed}", "kmeans", 2, seed, labels, noisy(0.8))
        write_cell(root, f"lin{seed}", "linear", 2, seed, labels, np.zeros(300, dtype=int))


CLAIMS = """claims:
  - label: "k-means > linear"
    where: {bits: 2}
    a: {scheme: kmeans}
    b: {scheme: linear}
  - label: "k-means > majority"
    a: {scheme: kmeans, bits: 2}
    b: majority
  - label: "k-means > FP"
    a: {scheme: kmeans, bits: 2}
    b: {scheme: none}
"""


def test_claims_command_on_records(tmp_path, capsys):
    study(tmp_path / "runs")
    (tmp_path / "claims.yaml").write_text(CLAIMS)
    args = ["claims", str(tmp_path / "runs"), "--claims", str(tmp_path / "claims.yaml"), "--resamples", "2000"]
    main([*args, "--out", str(tmp_path / "claims.md")])
    out = capsys.readouterr().out
    rows = {r.split(" | ")[0].strip("| "): r for r in out.splitlines() if r.startswith("| k-means")}
    assert rows["k-means > linear"].endswith("| holds |") and "(one class)" in rows["k-means > linear"]
    assert rows["k-means > majority"].endswith("| holds |") and "| 3 paired |" in rows["k-means > majority"]
    assert rows["k-means > FP"].endswith("| does not hold |")
    assert "Holm-adjusted over the 3 claims" in out
    main([*args, "--out", str(tmp_path / "again.md")])
    assert (tmp_path / "claims.md").read_bytes() == (tmp_path / "again.md").read_bytes()  # byte-deterministic


def test_claims_command_errors(tmp_path, capsys):
    study(tmp_path / "runs")
    labels = np.zeros(300, dtype=int)
    write_cell(tmp_path / "runs", "off", "kmeans", 4, 1, labels, labels, value=0.5)  # record disagrees
    (tmp_path / "c.yaml").write_text("claims: [{label: x, a: {scheme: kmeans, bits: 4}, b: {scheme: none}}]")
    with pytest.raises(SystemExit):
        main(["claims", str(tmp_path / "runs"), "--claims", str(tmp_path / "c.yaml")])
    assert "from predictions.jsonl is 100.0, the record says 50.0" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("claims: [{label: x, a: {scheme: kmeans}, b: {scheme: none}}]")
    with pytest.raises(SystemExit):  # bits 2 and 4: two cells with seed 1
        main(["claims", str(tmp_path / "runs"), "--claims", str(tmp_path / "c.yaml")])
    assert "several records of one seed" in capsys.readouterr().err


def test_correlation_claim_over_configurations(tmp_path, capsys):
    """Spearman's rho over cells (seeds averaged) between effective bits and the metric, with scipy's p."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 100)
    for bits in range(1, 9):
        for seed in (1, 2):
            acc = 0.5 + 0.05 * bits
            write_cell(tmp_path / "runs", f"b{bits}s{seed}", "kmeans", bits, seed, labels,
                       np.where(rng.random(100) < acc, labels, 1 - labels))  # fmt: skip
    for i, d in enumerate(sorted((tmp_path / "runs").iterdir())):
        rec = json.loads((d / "record.json").read_text())
        rec["scheme"]["effective_bits"] = rec["scheme"]["bits"] + 0.01 * i
        (d / "record.json").write_text(json.dumps(rec))
    (tmp_path / "c.yaml").write_text("""claims:
  - {label: "bits vs accuracy", kind: correlation, x: effective_bits, where: {scheme: kmeans}}
  - {label: "bits vs accuracy, negative", kind: correlation, x: effective_bits, direction: "<"}
""")
    main(["claims", str(tmp_path / "runs"), "--claims", str(tmp_path / "c.yaml"), "--resamples", "500"])
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| bits")]
    assert "| 8 configurations | ρ +" in rows[0] and rows[0].endswith("| holds |")
    assert rows[1].endswith("| does not hold |")
    with pytest.raises(QbenchError, match="needs label, x"):
        parse_claims("claims: [{label: c, kind: correlation}]")
