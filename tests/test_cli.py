"""The command line (qbench.cli): user errors are one line on stderr, exit code 2, no traceback, no record;
`run export=true`, `export` and `size`."""

import re

import pytest

from qbench.cli import main, options
from qbench.quant.checkpoint import PACKED_NAME, load_packed
from tests.conftest import qbench, read_record

CASES = [
    (
        ["run", "train=cpu", "task=sst2", "train.epochs=3"],
        "train.epochs would not apply to task sst2: this recipe "
        "sets train.tasks.sst2.epochs=2; override that key instead",
    ),
    (["run", "-m", "train=cpu", "task=rte,sst2", "train.max_train_examples=100"], "would not apply to task sst2"),
    (["run", "+train.tasks.sst2.order=ptq"], "train.tasks="),
    (["run", "model=gpt5"], "unknown model 'gpt5'; valid: albert, bart, bert"),
    (["run", "task=squad"], "unknown task 'squad'; valid: cnn_dm, cola"),
    (
        ["run", "scheme=binary"],
        f"unknown scheme 'binary'; valid: {', '.join(options('scheme'))}",  # every conf/scheme/*.yaml, sorted
    ),
    (["run", "train=huge"], "unknown train 'huge'"),
    (["run", "-m", "scheme=linear,kmeens"], "unknown scheme 'kmeens'"),
    (["run", "bits=9"], "bits must be an integer in 1..8, got 9"),
    (["run", "bits=0", "scheme=linear"], "bits must be an integer in 1..8"),
    (["run", "bits=2.5"], "bits must be an integer in 1..8, got 2.5"),
    (["run", "bits=two"], "bits must be an integer"),
    (["run", "scheme=none", "bits=4"], "scheme=none is the full-precision baseline"),
    (["run", "-m", "scheme=none", "bits=2,4"], "scheme=none is the full-precision baseline"),
    (["run", "scheme.granularity=channel", "scheme=linear"], "granularity='channel'; valid: tensor, row, group"),
    (["run", "scheme.init=random"], "init='random'; valid: linear, density, kmeans++"),
    (["run", "train.order=pretrain"], "train.order='pretrain'; valid: qat, ptq, ft_then_qat, zeroshot"),
    (["run", "train.max_train_examples=-5"], "train.max_train_examples=-5; valid: an integer >= 1 or null"),
    (["run", "device=tpu"], "device='tpu'; valid: auto, cpu, cuda"),
    (["run", "colour=blue"], "colour"),
    (["run", "model=bert"], "'bert-base-uncased' is not in the local HF cache and the hub is unreachable"),
    (["run", "model=albert"], "model.name_or_path=/path/to/albert-base-v2"),
    (["run", "model.name_or_path=/no/such/weights"], "model.name_or_path=/no/such/weights: no such folder"),
    (["run", "task=mnli"], "split 'train' not found; expected"),
    (["run", "task=qqp", "train.order=zeroshot"], "split 'validation' not found; expected"),
    (["run", "task.data_dir=/no/such/dir"], "/no/such/dir/train.parquet or /no/such/dir/train.jsonl"),
    (["frobnicate"], "unknown command 'frobnicate'; valid: run"),
]
POSITIVE, AT_LEAST_1, MAX_STEPS = "valid: a number > 0", "valid: an integer >= 1", "valid: -1 (train for `epochs`) or"
WARMUP = "valid: an integer >= 0 (steps) or a number in [0, 1)"
# every key's type and range (qbench/config.py): one line naming the key, the value and what is valid
CASES += [
    (["run", "train.lr=0"], f"train.lr=0; {POSITIVE}"),
    (["run", "train.lr=-1e-4"], f"train.lr=-0.0001; {POSITIVE}"),
    (["run", "train.lr=fast"], f"train.lr='fast'; {POSITIVE}"),
    (["run", "train.lr=inf"], f"train.lr=inf; {POSITIVE}"),
    (["run", "-m", "train.lr=0,1e-4"], f"train.lr=0; {POSITIVE}"),  # a sweep whose first cell is invalid
    (["run", "train.batch_size=0"], f"train.batch_size=0; {AT_LEAST_1}"),
    (["run", "train.batch_size=2.5"], f"train.batch_size=2.5; {AT_LEAST_1}"),
    (["run", "train.eval_batch_size=-8"], f"train.eval_batch_size=-8; {AT_LEAST_1}"),
    (["run", "train.epochs=0"], f"train.epochs=0; {POSITIVE}"),
    (["run", "train.epochs=-3"], f"train.epochs=-3; {POSITIVE}"),
    (["run", "train.max_length=0"], f"train.max_length=0; {AT_LEAST_1}"),
    (["run", "train.max_steps=0"], f"train.max_steps=0; {MAX_STEPS}"),
    (["run", "train.max_steps=-2"], f"train.max_steps=-2; {MAX_STEPS}"),
    (["run", "train.warmup=1.5"], f"train.warmup=1.5; {WARMUP}"),
    (["run", "train.warmup=-1"], f"train.warmup=-1; {WARMUP}"),
    (["run", "train.weight_decay=-0.1"], "train.weight_decay=-0.1; valid: a number >= 0"),
    (["run", "train.max_eval_examples=0"], "train.max_eval_examples=0; valid: an integer >= 1 or null"),
    (["run", "train.logging_steps=0"], f"train.logging_steps=0; {AT_LEAST_1}"),
    (["run", "train.progress_bar=maybe"], "train.progress_bar='maybe'; valid: true or false"),
    (["run", "train.progress_bar=no"], "train.progress_bar='no'; valid: true or false"),  # not read as false
    (["run", "train.optim=adam"], "train.optim='adam'; valid: adamw_torch, sgd"),
    (["run", "train.qat.lr=0"], f"train.qat.lr=0; {POSITIVE} or null"),
    (["run", "train.qat.epochs=-1"], f"train.qat.epochs=-1; {POSITIVE} or null"),
    (["run", "train.qat.batch_size=0"], f"train.qat.batch_size=0; {AT_LEAST_1} or null"),
    (["run", "train.qat.max_train_examples=0"], f"train.qat.max_train_examples=0; {AT_LEAST_1} or null"),
    (["run", "train.qat.warmup=2.5"], f"train.qat.warmup=2.5; {WARMUP}"),
    (["run", "train.qat.max_steps=0"], f"train.qat.max_steps=0; {MAX_STEPS}"),
    (["run", "~train.lr"], "train.lr is missing; valid: a number > 0"),
    (["run", "+train.lr_typo=3"], "unknown key train.lr_typo=3 (nothing reads it); valid keys of train: order, lr,"),
    (["run", "+foo=1"], "unknown key foo=1 (nothing reads it); valid keys at the top level: model, task, scheme"),
    (["run", "+train.qat.foo=1"], "unknown key train.qat.foo=1 (nothing reads it); valid keys of train.qat: lr,"),
    (["run", "+model.revision=main"], "unknown key model.revision='main' (nothing reads it); valid keys of model"),
    (["run", "+task.split=dev"], "unknown key task.split='dev' (nothing reads it); valid keys of task"),
    (["run", "+distill.alpha=0.5"], "unknown key distill.alpha=0.5 (nothing reads it); valid keys of distill"),
    (["run", "seed=1.5"], "seed=1.5; valid: an integer in 0..2**32-1"),
    (["run", "seed=abc"], "seed='abc'; valid: an integer in 0..2**32-1"),
    (["run", "seed='42'"], "seed='42'; valid: an integer in 0..2**32-1"),  # a string, not the number 42
    (["run", "seed=-1"], "seed=-1; valid: an integer in 0..2**32-1"),
    (["run", "device=1"], "device=1; valid: auto, cpu, cuda"),
    (["run", "save_predictions=maybe"], "save_predictions='maybe'; valid: true or false"),
    (["run", "study="], "study=''; valid: a non-empty string"),
    (["run", "model.family=decoder"], "model.family='decoder'; valid: encoder, causal_lm, seq2seq"),
    (["run", "model.include=abc"], "model.include='abc'; valid: a list of strings"),
    (["run", "model.name_or_path=null"], "model=minilm: set model.name_or_path (weights) or model.config"),
    (["run", "task.num_labels=0"], f"task.num_labels=0; {AT_LEAST_1}"),
    (["run", "task.eval_splits=[]"], "task.eval_splits=[]; valid: a non-empty list of strings"),
    (["run", "task.kind=translation"], "task.kind='translation'; valid: classification, causal_lm, dialog,"),
    (
        ["run", "task=ptb", "model=tiny_gpt2", "+task.generation.num_beams=2"],
        "task.generation.num_beams=2: task ptb is causal_lm; only summarization tasks read task.generation",
    ),
    (
        ["run", "task=personachat", "model=tiny_gpt2", "+task.lm.stride=2"],
        "task.lm.stride=2: dialog tasks read only task.lm.context_length",
    ),
    (
        ["run", "task=ptb", "model=tiny_gpt2", "task.lm.context_length=0"],
        "task.lm.context_length=0; valid: an integer >= 1 or null",
    ),
    (
        ["run", "task=xsum", "model=tiny_bart", "task.generation.num_beams=0"],
        "task.generation.num_beams=0; valid: an integer >= 1 or null",
    ),
    (
        ["run", "task=cnn_dm", "model=tiny_bart", "task.generation.samples=-1"],
        "task.generation.samples=-1; valid: an integer >= 0 or null",
    ),
    (["run", "distill.kd_weight=abc"], "distill.kd_weight='abc'; valid: a number"),
    (["run", "distill=kd", "distill.temperature=0"], "distill.temperature and distill.tau must be > 0"),
    # model-task fit (qbench.config.KIND_FAMILIES), checked before anything is loaded
    (
        ["run", "model=tiny_bert", "task=xsum"],
        "model=tiny_bert (model.family=encoder) cannot run task=xsum (summarization); summarization tasks need a "
        "model of family seq2seq",
    ),
    (
        ["run", "model=tiny_bert", "task=ptb"],
        "cannot run task=ptb (causal_lm); causal_lm tasks need a model of family causal_lm",
    ),
    (
        ["run", "model=tiny_albert", "task=personachat"],
        "model=tiny_albert (model.family=encoder) cannot run task=personachat (dialog)",
    ),
    (["run", "model=tiny_gpt2", "task=cnn_dm"], "model=tiny_gpt2 (model.family=causal_lm) cannot run task=cnn_dm"),
    (
        ["run", "model=tiny_bart", "task=wikitext2"],
        "model=tiny_bart (model.family=seq2seq) cannot run task=wikitext2",
    ),
    (["run", "model=tiny_bart", "task=sst2"], "classification tasks need a model of family encoder or causal_lm"),
    (["run", "scheme=laq", "train.optim=sgd"], "scheme=laq reads Adam's second moments"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_user_error_is_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("QBENCH_DATA_DIR", str(data_dir))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main([*argv, f"hydra.run.dir={tmp_path}/run"] if argv[0] == "run" else argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("qbench: error: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err
    assert not list(tmp_path.rglob("record.json"))
    assert not list(tmp_path.iterdir())  # no run folder, no sweep folder: nothing was started


def test_real_binary_exits_2_fast_offline(tmp_path):
    import time

    from tests.conftest import qbench

    t0 = time.perf_counter()
    p = qbench("run", "model=bert", "scheme=kmeans", "bits=2", f"hydra.run.dir={tmp_path}", fresh=True)
    # about 2 s on an idle 2-core machine (imports and config only, no hub wait); the bound leaves room for a
    # loaded CI machine while still catching huggingface_hub's retry loop (tens of seconds)
    assert p.returncode == 2 and time.perf_counter() - t0 < 30
    assert p.stderr.count("\n") == 1 and "hub is unreachable" in p.stderr


def test_run_export_true_then_load_gives_the_record_metrics(tmp_path, data_dir):
    from omegaconf import OmegaConf

    from qbench import kinds
    from qbench.cell import parse
    from qbench.models import load_tokenizer

    p = qbench("run", "model=tiny_bert", "task=rte", "train=debug", "train.max_eval_examples=48", "export=true",
               f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    r = read_record(tmp_path)
    packed = tmp_path / PACKED_NAME
    s = r["size"]
    assert s["packed_bytes_source"] == "file" and s["packed_bytes"] == packed.stat().st_size
    assert s["nominal_bits"] == 2 and 2.0 < s["effective_bits"] < 2.01 and s["ratio_fp32"] > 10
    cell = parse(OmegaConf.create(r["config"]))
    kind, tok = kinds.get(cell.task.kind), load_tokenizer(cell.model)
    model = load_packed(packed)
    data = kind.load_data(cell, tok, need_train=False)
    metrics, _ = kind.evaluate(cell, model, tok, data)
    assert metrics == r["metrics"]
    # already exported: `qbench export` checks that it loads and reports it
    p = qbench("export", str(tmp_path))
    assert p.returncode == 0 and "already exported" in p.stdout, p.stderr[-2000:]


def test_export_command_reruns_a_run_without_packed_file(tmp_path, data_dir):
    p = qbench("run", "model=tiny_bert", "task=rte", "train=debug", "train.max_eval_examples=48", "scheme=linear",
               "bits=3", f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    before = read_record(tmp_path)
    assert before["size"]["packed_bytes_source"] == "computed" and not (tmp_path / PACKED_NAME).exists()
    p = qbench("export", str(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:]
    after = read_record(tmp_path)
    assert (tmp_path / PACKED_NAME).stat().st_size == after["size"]["packed_bytes"] == before["size"]["packed_bytes"]
    assert after["size"]["packed_bytes_source"] == "file" and (tmp_path / "record.before-export.json").exists()
    assert "same as the original record" in p.stdout and after["metrics"] == before["metrics"]


def test_size_command_last_line(tmp_path):
    p = qbench("size", "model=tiny_bert", "scheme=linear", "bits=3")
    assert p.returncode == 0, p.stderr[-2000:]
    last = p.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ratio_fp32=\d+\.\d\d ratio_paper=\d+\.\d\d", last), last
    assert "fp32 safetensors file" in p.stdout
    p = qbench("size", "model=tiny_bert", "scheme=none")
    assert p.returncode == 2 and "nothing is quantized" in p.stderr
