"""Config schemas (qbench.config): every shipped yaml conforms, the model-task rule, train.optim=sgd trains."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module

from qbench.cli import check_overrides
from qbench.config import KIND_FAMILIES, TrainSchema, check_config, typed_config
from qbench.errors import QbenchError
from tests.conftest import REPO

# a task of each kind, to pair with every model
TASK_OF_KIND = {"classification": "sst2", "causal_lm": "ptb", "dialog": "personachat", "summarization": "xsum"}


def composed(*overrides: str):
    with initialize_config_module("qbench.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def stems(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["task", "train", "distill"])
def test_every_shipped_option_conforms(group):
    for option in stems(group):
        kind = composed(f"{group}={option}").task.kind
        model = {"causal_lm": "tiny_gpt2", "dialog": "tiny_gpt2", "summarization": "tiny_bart"}.get(kind, "minilm")
        check_config(composed(f"{group}={option}", f"model={model}"))


@pytest.mark.parametrize("experiment", stems("experiment"))
def test_first_cell_of_every_experiment_conforms(experiment):
    """The CLI validates an experiment's first cell, its hydra.sweeper.params included (paper_b_bart: xsum)."""
    first = check_overrides([f"+experiment={experiment}"], full=False)
    check_config(composed(*first))
    if experiment == "paper_b_bart":
        assert "task=xsum" in first and composed(*first).model.family == "seq2seq"


@pytest.mark.parametrize("model", stems("model"))
def test_every_model_runs_exactly_the_kinds_of_its_family(model):
    family = composed(f"model={model}").model.family
    for kind, task in TASK_OF_KIND.items():
        cfg = composed(f"model={model}", f"task={task}")
        if family in KIND_FAMILIES[kind]:
            check_config(cfg)
        else:
            with pytest.raises(QbenchError, match=f"model={model} .* cannot run task={task}"):
                check_config(cfg)


def test_defaults_of_the_qat_section_are_null():
    cfg = check_config(composed())
    assert cfg["train"]["optim"] == "adamw_torch" and set(cfg["train"]["qat"].values()) == {None}
    assert set(cfg["train"]) == set(TrainSchema.__dataclass_fields__)  # the yaml lists every key of the schema


def test_sgd_run_trains():
    """train.optim=sgd reaches TrainingArguments: Trainer builds torch.optim.SGD, and the weights move."""
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification, Trainer, default_data_collator

    from qbench.train import finetune

    cfg = composed("train=debug", "train.optim=sgd", "train.max_steps=3", "train.batch_size=4", "train.lr=0.5")
    train = typed_config(cfg).train
    check_config(composed("train=debug", "train.optim=sgd"))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32))  # fmt: skip
    ds = Dataset.from_dict({"input_ids": [[2, 5, 7, 3]] * 8, "attention_mask": [[1] * 4] * 8, "labels": [0, 1] * 4})
    before = model.classifier.weight.detach().clone()
    optimizers = []

    class Spy(Trainer):
        def create_optimizer(self, *args, **kwargs):
            optimizers.append(super().create_optimizer(*args, **kwargs))
            return optimizers[-1]

    info = finetune(model, ds, default_data_collator, train, seed=0, device="cpu", trainer_cls=Spy)
    assert type(optimizers[0]) is torch.optim.SGD
    assert info["steps"] == 3 and torch.isfinite(torch.tensor(info["loss"]))
    assert not torch.equal(model.classifier.weight, before)
