"""Model loading (qbench.models) and the training guard (qbench.train)."""

from dataclasses import replace

import pytest
import torch
from datasets import Dataset
from hydra import compose, initialize_config_module
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from qbench.config import typed_config
from qbench.models import load_model
from qbench.train import finetune

with initialize_config_module("qbench.conf", version_base="1.3"):
    _DEBUG = typed_config(compose("config", overrides=["model=minilm", "train=debug"]))
MINILM, DEBUG = _DEBUG.model, _DEBUG.train  # the shipped settings, typed

TINY = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


def test_half_precision_checkpoint_loads_as_float32(tmp_path):
    """transformers 5 keeps a checkpoint's dtype; training must get float32 master weights regardless."""
    BertForSequenceClassification(TINY).half().save_pretrained(tmp_path)
    cfg = replace(MINILM, name_or_path=str(tmp_path))
    model = load_model(cfg, AutoModelForSequenceClassification, 0, num_labels=2)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_finetune_refuses_non_finite_weights():
    """A NaN weight with a finite logged loss (Trainer reports NaN losses as 0) is a diverged run, not a result."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(TINY)
    model.unused = torch.nn.Parameter(torch.tensor([float("nan")]))  # never in the forward: the loss stays finite
    ds = Dataset.from_dict({"input_ids": [[1, 5, 6, 2]] * 4, "labels": [0, 1, 0, 1]})
    train = replace(DEBUG, lr=1e-3, batch_size=2, eval_batch_size=2, max_steps=1, warmup=0.0, weight_decay=0.0,
                    logging_steps=1)  # fmt: skip
    with pytest.raises(FloatingPointError, match="non-finite weights in 1 tensors \\(unused\\)"):
        finetune(model, ds, None, train, 0, "cpu")
