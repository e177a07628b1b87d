"""GPTQ (qbench.quant.gptq, qbench.quant.gptq_scheme, qbench.gptq_pass): the lazy-batch Cholesky algorithm against a
plain column loop with an explicit inverse, H = identity is round-to-nearest, per-layer output errors on tiny models of
every family, ALBERT's shared layer, and a PTQ cell composed from the real config, exported and reloaded."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module
from transformers import AlbertConfig, AlbertForSequenceClassification, LlamaConfig, LlamaForCausalLM

import qbench.cli  # noqa: F401  (registers the cell_id resolver the config uses)
import qbench.gptq_pass as gp
from qbench.calibrate import calibrate
from qbench.cell import parse
from qbench.errors import QbenchError
from qbench.kinds import classification as C
from qbench.pipeline import run
from qbench.quant import primitives as P
from qbench.quant.checkpoint import PACKED_NAME, load_packed
from qbench.quant.gptq import KMeansGrid, LinearGrid, gptq_quantize, output_errors, rtn
from qbench.quant.gptq_scheme import GPTQ
from qbench.quant.kmeans import KMeans
from qbench.quant.linear import Linear
from qbench.quant.schemes import Calibration
from qbench.quant.wiring import quantize_model, select
from tests.tiny import tiny_bart, tiny_bert, tiny_gpt2


def reference(w, h, grid, damp, act_order):
    """GPTQ the slow way: every column in turn, the whole rest of the row updated at once, H^-1 as an explicit
    inverse downdated after each column (no Cholesky, no lazy batches)."""
    W, H = w.double().clone(), h.double().clone()
    rows, cols = W.shape
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = torch.argsort(torch.diagonal(H), descending=True, stable=True) if act_order else torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.diagonal(H).mean() * torch.eye(cols, dtype=H.dtype)
    Hinv = torch.linalg.inv(H)
    Q = torch.zeros_like(W)
    for t in range(cols):
        j = int(perm[t])
        g = grid.group(j)
        if not grid.fixed[g]:  # a group's range: its columns' current values when the first of them is reached
            grid.fix(g, W[:, [int((perm == c).nonzero()) for c in grid.columns(g)]])
        Q[:, t] = grid.quantize(j, W[:, t])[0]
        W[:, t:] -= ((W[:, t] - Q[:, t]) / Hinv[t, t])[:, None] * Hinv[t, t:][None]
        Hinv = Hinv - Hinv[:, t : t + 1] @ Hinv[t : t + 1, :] / Hinv[t, t]
    return Q[:, torch.argsort(perm)]


def layer(rows=6, cols=16, n=40, seed=0):
    """A random weight and the Hessian X X^T / n of random inputs of unequal scales, input 3 never active."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    x = torch.randn(cols, n, generator=g) * torch.rand(cols, 1, generator=g)
    x[3] = 0
    return w, x, x @ x.T / n


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("kind", ["row", "group", "sym_group", "kmeans"])
def test_matches_the_column_loop_with_an_explicit_inverse(kind, act_order):
    w, _, h = layer()
    make = {
        "row": lambda: LinearGrid(6, 16, 3, False, None),
        "group": lambda: LinearGrid(6, 16, 3, False, 4),
        "sym_group": lambda: LinearGrid(6, 16, 3, True, 4),
        "kmeans": lambda: KMeansGrid.fit(w, 2),
    }[kind]
    got = gptq_quantize(w, h, make(), damp=0.01, block_size=5, act_order=act_order)  # 5: blocks cut groups
    want = reference(w, h, make(), 0.01, act_order)
    torch.testing.assert_close(got.q, want, rtol=0, atol=1e-12)
    assert not torch.allclose(got.q, rtn(w.double(), make()))  # the error feedback changed the rounding
    # the codes decode to q on the grid's own parameters
    state = got.grid.state(got.codes)
    if kind == "kmeans":
        torch.testing.assert_close(got.grid.centroids.gather(1, got.codes), got.q, rtol=0, atol=0)
    else:
        scale, offset = state["scale"].double(), state["offset"].double()
        torch.testing.assert_close(offset + scale * state["codes"], got.q.reshape(scale.shape[0], -1), rtol=1e-6,
                                   atol=1e-6)  # fmt: skip
    assert got.q[:, 3].unique().numel() <= 6  # the dead input: its weights were zeroed, then rounded


def test_float32_as_the_pass_computes_agrees_with_float64():
    w, _, h = layer(rows=64, cols=32, n=200)
    r64 = gptq_quantize(w, h, LinearGrid(64, 32, 3, False, 8), block_size=8)
    r32 = gptq_quantize(w, h, LinearGrid(64, 32, 3, False, 8), block_size=8, dtype=torch.float32)
    assert r32.q.dtype == torch.float32
    assert (r32.codes == r64.codes).float().mean() > 0.99  # a rounding tie may flip and feed forward
    assert r32.stats["gptq_err"] == pytest.approx(r64.stats["gptq_err"], rel=0.05)


@pytest.mark.parametrize("group_size,symmetric", [(None, False), (4, False), (8, True)])
def test_identity_hessian_is_round_to_nearest(group_size, symmetric):
    w, _, _ = layer(rows=5, cols=16)
    got = gptq_quantize(w, torch.eye(16), LinearGrid(5, 16, 3, symmetric, group_size), block_size=3)
    gran = "row" if group_size is None else "group"
    want = P.linear_fake_quant(w.double(), 3, symmetric, gran, group_size or 16)
    torch.testing.assert_close(got.q, want, rtol=0, atol=1e-12)
    assert got.stats["gptq_err"] == pytest.approx(got.stats["rtn_err"], rel=1e-12)


def test_identity_hessian_kmeans_is_the_row_codebook():
    # the kmeans_row scheme's codebooks and labels: GPTQ with H = I reproduces them
    w, _, _ = layer(rows=5, cols=32)
    for search in ("lloyd", "global"):
        book = KMeans(bits=2, granularity="row", search=search).parametrization(w, False)
        got = gptq_quantize(w, torch.eye(32), KMeansGrid.fit(w, 2, search=search))
        assert torch.equal(got.q.float(), book(w)), search


def test_output_error_is_the_error_on_the_calibration_inputs():
    w, x, h = layer()
    r = gptq_quantize(w, h, LinearGrid(6, 16, 3, False, 4))
    d = (w.double() - r.q) @ x.double()  # (rows, n)
    assert r.stats["gptq_err"] == pytest.approx(float(d.square().sum()) / x.shape[1], rel=1e-9)
    assert r.stats["gptq_err"] < r.stats["rtn_err"]
    assert output_errors(w.double(), w.double(), w.double(), h.double())["gptq_err"] == 0


def tiny_albert():
    torch.manual_seed(0)
    cfg = AlbertConfig(vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    return AlbertForSequenceClassification(cfg).eval()


def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


MODELS = {"bert": tiny_bert, "gpt2": tiny_gpt2, "bart": tiny_bart, "albert": tiny_albert, "llama": tiny_llama}
LM = ("gpt2", "bart", "llama")


def calibration_batches(family: str) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    ids = [torch.randint(0, 100, (2, 12), generator=g) for _ in range(3)]
    return [{"input_ids": i, "labels": i if family in LM else torch.zeros(2, dtype=torch.long)} for i in ids]


def targets(model):
    return select(model, ["*"], ["*classifier*", "*pooler*", "*lm_head*"])


@pytest.mark.parametrize("grid", ["linear", "kmeans"])
@pytest.mark.parametrize("family", list(MODELS))
def test_every_layer_of_tiny_models_beats_round_to_nearest(family, grid):
    torch.set_num_threads(1)
    model = MODELS[family]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = gp.sequential_gptq(model, targets(model), calibration_batches(family), GPTQ(bits=3, grid=grid))
    summary = gp.gptq_summary(out)
    linears = [x for x in summary["layers"] if x["tokens"]]
    assert len(linears) >= 7 and summary["layers_with_hessian"] == len(linears)
    for x in linears:  # on the calibration inputs each layer sees in the sequential pass
        assert x["gptq_rel_err"] <= x["rtn_rel_err"], x
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # weights put back


@pytest.mark.parametrize("family", ["bert", "gpt2", "bart", "llama"])
def test_cached_block_inputs_equal_full_forward_passes(family, monkeypatch):
    # the block-by-block pass (one capture per list, then each block's outputs) against full forward passes of the
    # partly quantized model for every stage: the same Hessians, so the same codes
    model, data = MODELS[family](), calibration_batches(family)
    scheme = GPTQ(bits=3, group_size=8)
    fast = gp.sequential_gptq(model, targets(model), data, scheme)
    monkeypatch.setattr(gp, "_block", lambda model, key: None)
    slow = gp.sequential_gptq(model, targets(model), data, scheme)
    assert fast.keys() == slow.keys()
    for name in fast:
        assert fast[name]["tokens"] == slow[name]["tokens"]
        torch.testing.assert_close(fast[name]["gptq"].q, slow[name]["gptq"].q, rtol=0, atol=1e-6)


def test_albert_shared_layer_is_quantized_once_over_all_its_uses():
    model = tiny_albert()
    t = targets(model)
    out = gp.sequential_gptq(model, t, calibration_batches("albert"), GPTQ(bits=3))
    shared = [n for n in out if ".albert_layers.0." in n]
    assert len(shared) == 6 and len(set(shared)) == 6  # q, k, v, dense, ffn, ffn_output: one entry each
    positions = 3 * 2 * 12
    assert {out[n]["tokens"] for n in shared} == {4 * positions}  # 4 layers use it: H over every use
    assert out["albert.encoder.embedding_hidden_mapping_in.weight"]["tokens"] == positions


def test_scheme_is_validated():
    with pytest.raises(QbenchError, match="valid: linear, kmeans"):
        GPTQ(bits=3, grid="vq")
    with pytest.raises(QbenchError, match="per row"):
        GPTQ(bits=3, grid="kmeans", group_size=128)
    with pytest.raises(QbenchError, match="weights only"):
        GPTQ(bits=3, act_bits=8)
    assert GPTQ(bits=3, grid="kmeans", weighting="fisher").calibration() == Calibration(("grad_sq", "hessian"), 32)


@pytest.mark.parametrize("grid,codec", [("linear", "gptq_scheme:GridCodes"), ("kmeans", "kmeans:GroupedCodebook")])
def test_ptq_cell_from_the_config_exports_and_reloads(tmp_path, data_dir, grid, codec):
    with initialize_config_module("qbench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["model=tiny_bert", "task=sst2", "train=debug", f"data_dir={data_dir}",
                                           f"cache_dir={tmp_path / 'cache'}", "scheme=gptq", "bits=3",
                                           f"scheme.grid={grid}", "scheme.calib_batches=2", "train.order=zeroshot",
                                           "export=true"])  # fmt: skip
    c = parse(cfg)
    r = run(c, tmp_path / "run")
    assert r["status"] == "completed" and "calibrate" in r["timings"] and r["scheme"]["name"] == "gptq"
    g = r["scheme"]["gptq"]
    assert g["seconds"] > 0 and g["peak_rss_mib"] > 0 and g["calibration_tokens"] > 0
    assert g["layers_better_than_rtn"] == g["layers_with_hessian"] == 12  # 2 layers x 6 Linear
    # the packed file rebuilds exactly the weights the cell evaluated
    exported = load_packed(tmp_path / "run" / PACKED_NAME).state_dict()
    model, tok = C.load_model(c.model, c.task, c.seed)
    stats = calibrate(model, c.calibration, C.load_data(c, tok, True)["train"].inputs, C.collator(tok),
                      c.train.batch_size, c.model.include, c.model.exclude, c.scheme)  # fmt: skip
    quantize_model(model, c.scheme, c.model.include, c.model.exclude, stats)
    for name in (x["name"] for x in r["scheme"]["layers"]):
        mod = model.get_submodule(name.rsplit(".", 1)[0])
        assert torch.equal(exported[name], mod.weight), name
        assert type(mod.parametrizations.weight[0]).__module__.endswith(codec.split(":")[0])


@pytest.mark.parametrize("grid", ["linear", "kmeans"])
def test_with_identity_hessian_the_packed_state_is_the_grids_own(grid):
    # same codes and side tensors as scheme=linear (group) / kmeans_row on the same weight: the same packed bytes
    w, _, _ = layer(rows=5, cols=32)
    scheme = GPTQ(bits=3, grid=grid, group_size=8 if grid == "linear" else None)
    res = gptq_quantize(w, torch.eye(32), scheme.make_grid(w), dtype=torch.float32)
    mine = scheme.parametrization(w, False, name="w", stats={"gptq": res})
    if grid == "linear":
        theirs = Linear(bits=3, granularity="group", group_size=8).parametrization(w, False)
    else:
        theirs = KMeans(bits=3, granularity="row", search="global").parametrization(w, False)  # as kmeans_row.yaml
    a, b = mine.packed_state(w), theirs.packed_state(w)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k].reshape(b[k].shape).to(b[k].dtype), b[k]), k
    assert torch.equal(mine(w), theirs(w)) and mine.bits == theirs.bits == 3
    assert tuple(mine.code_layout(w)) == tuple(theirs.code_layout(w))  # the diagnostics read codes alike
