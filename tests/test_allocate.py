"""The mixed-precision allocator: exact against brute force, the budget met and never exceeded, a hand-computed case,
drops read from records in the metric's own direction; budgets in effective bits (the default) or code bits."""

import functools
import itertools
import json
import random
import shlex

import pytest

from qbench import allocate
from qbench.allocate import Group, read_sensitivity
from qbench.cli import main
from qbench.errors import QbenchError
from tests.conftest import REPO

solve = functools.partial(allocate.solve, unit="code")  # the knapsack's tests below count code bits


def brute_force(groups, budget):
    """(least drop, its code bits) over every feasible combination."""
    total = sum(g.params for g in groups)
    best = None
    for picks in itertools.product(*(sorted(g.drops) for g in groups)):
        bits = sum(g.params * b for g, b in zip(groups, picks, strict=True))
        if bits <= budget * total + 1e-9:
            drop = sum(g.drops[b] for g, b in zip(groups, picks, strict=True))
            best = min(best or (drop, bits), (drop, bits))
    return best


def random_groups(rng, n, equal_sizes=False, decreasing=False):
    groups = []
    for i in range(n):
        bits = sorted(rng.sample(range(1, 9), rng.randint(1, 4)))
        drops = sorted((rng.uniform(0, 5) for _ in bits), reverse=True) if decreasing else [rng.uniform(-1, 5)
                                                                                           for _ in bits]  # fmt: skip
        groups.append(Group(f"g{i}", 10 if equal_sizes else rng.randint(1, 50), dict(zip(bits, drops, strict=True))))
    return groups


def test_optimal_against_brute_force_on_random_instances():
    rng = random.Random(0)
    for _ in range(300):
        groups = random_groups(rng, rng.randint(1, 5))
        budget = round(rng.uniform(1, 8), 2)
        best = brute_force(groups, budget)
        if best is None:
            with pytest.raises(QbenchError, match="below the fewest average code bits"):
                solve(groups, budget)
            continue
        a = solve(groups, budget)
        assert a.drop == pytest.approx(best[0])
        assert a.average_bits <= budget  # never over the budget
        assert a.code_bits == sum(g.params * a.bits[g.name] for g in groups)
        assert a.drop == pytest.approx(sum(g.drops[a.bits[g.name]] for g in groups))


def test_a_reachable_budget_is_met_exactly():
    """Equal-size groups whose drop falls with every added bit: a solution under a reachable budget can always give
    one group one more bit and lose less, so the optimum spends the budget to the bit."""
    rng = random.Random(1)
    for _ in range(200):
        n = rng.choice([1, 2, 4, 5, 8])  # budgets k / n are then finite decimals, as a user writes them
        groups = [Group(f"g{i}", 10, {b: 10.0 / b + rng.uniform(0, 0.01) for b in range(1, 9)}) for i in range(n)]
        k = rng.randint(n, 8 * n)  # n groups of 10 weights at k bits in all: average k / n, reached exactly
        a = solve(groups, k / n)
        assert a.code_bits == 10 * k and a.average_bits == k / n
    for _ in range(100):  # measured options only (a few bit widths per group): the budget is still never exceeded
        groups = random_groups(rng, rng.randint(1, 6), equal_sizes=True, decreasing=True)
        budget = rng.choice([2.0, 2.5, 3.0, 3.25, 4.0, 6.0])
        if brute_force(groups, budget) is not None:
            assert solve(groups, budget).average_bits <= budget


def test_hand_computed_case():
    """A small sensitive group and a large robust one at 2.5 bits on average (cap 2.5 x 400 = 1000 code bits):
    (A, B) at (2, 2) = 800 bits, drop 5.5; (4, 2) = 1000 bits, drop 1.5; (2, 4) = 1400 and (4, 4) = 1600 are over.
    The small sensitive group gets the bits."""
    a_, b_ = Group("A", 100, {2: 5.0, 4: 1.0}), Group("B", 300, {2: 0.5, 4: 0.2})
    a = solve([a_, b_], 2.5)
    assert a.bits == {"A": 4, "B": 2} and a.drop == pytest.approx(1.5) and a.average_bits == 2.5
    assert solve([a_, b_], 4).bits == {"A": 4, "B": 4}
    assert solve([a_, b_], 2.49).bits == {"A": 2, "B": 2}  # 996 < 1000: (4, 2) no longer fits
    with pytest.raises(QbenchError, match="below the fewest average code bits the measured options allow, 2.000"):
        solve([a_, b_], 1.9)


def test_equal_drops_prefer_more_bits():
    a = solve([Group("A", 10, {2: 0.0, 3: 0.0, 4: 0.0}), Group("B", 10, {2: 1.0, 3: 1.0})], 3.5)
    assert a.bits == {"A": 4, "B": 3}  # measurements that cannot tell the options apart never cost bits


def write_record(path, seed, value, only=None, bits=None, params=0, metric="perplexity", model_name="m"):
    scheme = {"_target_": "qbench.quant.kmeans.KMeans", "bits": bits, **({"only": only} if only else {})}
    model = {"name": model_name, "config": {"model_type": "bert", "num_hidden_layers": 2},
             "groups": {"embed": ["*.emb*"], "layer{i}": ["*.layer.{i}.*"]}}  # fmt: skip
    summary = {"name": "kmeans" if only else "none", "bits": bits, "quantized_params": params}
    record = {"status": "completed", "cell_id": path.name, "model": model_name, "task": "t", "seed": seed,
              "order": "ptq", "scheme": summary,
              "main_metric": {"name": metric, "split": "test", "value": value},
              "config": {"model": model, "scheme": scheme, "seed": seed, "bits": bits}}  # fmt: skip
    path.mkdir(parents=True)
    (path / "record.json").write_text(json.dumps(record))


@pytest.mark.parametrize("metric,sign", [("perplexity", 1), ("accuracy", -1)])
def test_drops_follow_the_metric_direction_and_average_over_seeds(tmp_path, metric, sign):
    """Perplexity rising and accuracy falling are both drops (> 0); each seed is compared with its own FP record."""
    for seed, fp in ((1, 10.0), (2, 20.0)):
        write_record(tmp_path / f"fp{seed}", seed, fp, metric=metric)
        for bits, worse in ((2, 3.0), (4, 1.0)):
            for group, only, params in (("embed", ["*.emb*"], 100), ("layer0", ["*.layer.0.*"], 10),
                                        ("layer1", ["*.layer.1.*"], 10)):  # fmt: skip
                delta = worse * seed * (2 if group == "layer1" else 1)
                write_record(tmp_path / f"{group}-{bits}-{seed}", seed, fp + sign * delta, only, bits, params, metric)
    study = read_sensitivity(tmp_path)
    assert [g.name for g in study.groups] == ["embed", "layer0", "layer1"]
    assert study.fp == {1: 10.0, 2: 20.0} and study.metric == f"test {metric}"
    by = {g.name: g for g in study.groups}
    assert by["embed"].params == 100 and by["embed"].patterns == ("*.emb*",)
    assert by["layer1"].drops == {2: pytest.approx(9.0), 4: pytest.approx(3.0)}  # mean of 6 and 12; of 2 and 4
    (tmp_path / "fp2" / "record.json").unlink()
    with pytest.raises(QbenchError, match="no full-precision record of seed 2"):
        read_sensitivity(tmp_path)


def test_records_of_two_studies_or_a_missing_group_are_refused(tmp_path):
    write_record(tmp_path / "fp", 1, 10.0)
    write_record(tmp_path / "a", 1, 11.0, ["*.emb*"], 2, 100)
    with pytest.raises(QbenchError, match="no completed record of group.s. layer0, layer1"):
        read_sensitivity(tmp_path)
    write_record(tmp_path / "b", 1, 11.0, ["*.layer.0.*"], 2, 100, model_name="other")
    with pytest.raises(QbenchError, match="records of 2 sensitivity studies .they differ in model.name"):
        read_sensitivity(tmp_path)


def test_effective_budget_counts_codebooks_and_scales():
    """The hand-computed case again with each group's stored bits (codes + side tensors): at 2.5 effective bits
    (cap 1000 stored bits) (A, B) at (4, 2) takes 500 + 690 = 1190 bits, over; (2, 2) = 950 fits."""
    a_ = Group("A", 100, {2: 5.0, 4: 1.0}, sizes={2: 260, 4: 500})
    b_ = Group("B", 300, {2: 0.5, 4: 0.2}, sizes={2: 690, 4: 1300})
    a = allocate.solve([a_, b_], 2.5)  # the default unit: effective
    assert a.unit == "effective" and a.bits == {"A": 2, "B": 2}
    assert a.stored_bits == 950 and a.effective_bits == a.average_bits == 950 / 400 and a.average_code_bits == 2.0
    code = allocate.solve([a_, b_], 2.5, unit="code")
    assert code.bits == {"A": 4, "B": 2} and code.effective_bits == 1190 / 400 > 2.5  # within 2.5 code bits only
    with pytest.raises(QbenchError, match="below the fewest average effective bits the measured options allow, 2.375"):
        allocate.solve([a_, b_], 2.3)
    with pytest.raises(QbenchError, match="no measured size at 2 bits"):
        allocate.solve([Group("C", 10, {2: 1.0})], 3.0)


SST2 = REPO / "results" / "codebooks_sensitivity" / "minilm_sst2"  # MiniLM, per-row k-means, 2/3/4 bits, committed


def test_records_sizes_add_up_to_the_mixed_cells_size():
    """The committed study: the stored bits of each group's sensitivity record at its chosen bits add up to the
    mixed cell's own record (results/codebooks, the cell run from the code-bits allocation at 3.0): every tensor is
    packed alone. In effective bits that allocation was 3.59, not 3.0; the effective budget keeps to 3.0."""
    study = read_sensitivity(SST2)
    code = allocate.solve(study.groups, 3.0, unit="code")
    mixed = json.loads((REPO / "results/codebooks/minilm-sst2-kmeans-b3-s42-95ab1989/record.json").read_text())
    assert code.average_code_bits <= 3.0 and code.effective_bits == pytest.approx(mixed["size"]["effective_bits"])
    assert code.effective_bits > 3.5
    effective = allocate.solve(study.groups, 3.0)
    assert effective.unit == "effective" and 2.9 < effective.effective_bits <= 3.0


def test_command_says_the_unit(tmp_path, capsys):
    main(["allocate", str(SST2), "--budget", "3.0", "--out", str(tmp_path / "a.yaml")])
    out = capsys.readouterr().out
    assert "budget 3.0 effective bits per weight (codes + codebooks/scales" in out
    assert "--budget-unit effective" in (tmp_path / "a.yaml").read_text()
    main(["allocate", str(SST2), "--budget", "3.0", "--budget-unit", "code"])
    assert "budget 3.0 code bits per weight (code bits only)" in capsys.readouterr().out


def test_the_mixed_cell_records_its_budget_without_changing_its_id(capsys):
    """The printed command notes the budget and its unit (`allocation=`): it composes, validates, lands in the
    record's config, and leaves the cell id as without it (records of mixed cells run before the note stay valid)."""
    from hydra import compose, initialize_config_module

    from qbench.config import check_config
    from qbench.sweep import cell_id

    main(["allocate", str(SST2), "--budget", "3.0", "--budget-unit", "code"])
    args = shlex.split(capsys.readouterr().out.strip().splitlines()[-1])[2:]  # after "qbench run"
    assert args[-1] == "allocation={budget:3.0,unit:code}"
    with initialize_config_module("qbench.conf", version_base="1.3"):
        noted, bare = compose("config", overrides=args), compose("config", overrides=args[:-1])
    assert check_config(noted)["allocation"] == {"budget": 3.0, "unit": "code"}
    assert bare.allocation is None and cell_id(noted) == cell_id(bare)
    with initialize_config_module("qbench.conf", version_base="1.3"), pytest.raises(QbenchError, match="unit"):
        check_config(compose("config", overrides=[*args[:-1], "allocation={budget:3.0,unit:bytes}"]))
