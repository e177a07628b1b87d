"""Abstractive summarization (XSum, CNN/DailyMail) with an encoder-decoder (BART): fine-tune with teacher forcing,
generate with beam search, score ROUGE-1/2/L/Lsum (rouge-score, stemming on, F-measure x 100; rougeLsum, the
papers' ROUGE-L, on sentences split by pysbd: qbench.kinds.generative.rouge).

Settings (task.generation.*): num_beams, max_source_length (document tokens, truncated; null = the model's
maximum, e.g. 1024 for BART), max_target_length
(reference tokens in training and the most tokens generated), min_target_length, length_penalty,
no_repeat_ngram_size, batch_size (documents per generate call), samples (generated summaries kept in the record).
Every generated summary is in predictions.jsonl (save_predictions=true); the first `samples` also in the record.
"""

from __future__ import annotations

from dataclasses import asdict

import datasets
import torch
from torch.nn.utils import parametrize

from qbench.config import ModelSchema
from qbench.data import load_task_data, split_file
from qbench.errors import QbenchError
from qbench.kinds import Split
from qbench.kinds.generative import pad_collator, rouge
from qbench.models import load_model as _load
from qbench.models import load_tokenizer
from qbench.tasks import TaskSpec


def gen(task: TaskSpec) -> dict:
    """task.generation as a dict (a yaml's nulls already replaced by qbench.config.GenerationSchema's defaults)."""
    return asdict(task.generation)


def load_model(model_cfg: ModelSchema, task: TaskSpec, seed: int):
    from transformers import AutoModelForSeq2SeqLM

    tok = load_tokenizer(model_cfg)
    model = _load(model_cfg, AutoModelForSeq2SeqLM, seed)
    c = model.config
    if c.pad_token_id is None:
        c.pad_token_id = tok.pad_token_id
    if c.decoder_start_token_id is None:
        c.decoder_start_token_id = tok.eos_token_id
    tok.model_max_length = c.max_position_embeddings  # the source-length limit (default of max_source_length)
    return model, tok


def source_length(task: TaskSpec, tok) -> int:
    """task.generation.max_source_length, default (null) the model's maximum (tok.model_max_length, set by
    load_model); more than the model's maximum is an error."""
    n = task.generation.max_source_length or tok.model_max_length
    if n > tok.model_max_length:
        raise QbenchError(f"task.generation.max_source_length={n} exceeds the model's maximum {tok.model_max_length}")
    return int(n)


def encode_ids(tok, text: str, max_len: int) -> list[int]:
    """Tokenize with the tokenizer's special tokens, truncated to max_len, ending in EOS (GPT-2's BPE adds none)."""
    ids = tok(text, truncation=True, max_length=max_len, verbose=False)["input_ids"]
    if tok.eos_token_id is not None and (not ids or ids[-1] != tok.eos_token_id):
        ids = ids[: max_len - 1] + [tok.eos_token_id]
    return ids


def load_data(cell, tok, need_train: bool) -> dict[str, Split]:
    """{split: Split(encoded documents and summaries, raw rows, source)}."""
    task, tr, data_dir, g = cell.task, cell.train, cell.data.data_dir, gen(cell.task)
    src_len = g["max_source_length"] = source_length(task, tok)
    raw = load_task_data(task, data_dir, need_train, tr.max_train_examples, tr.max_eval_examples, cell.seed)
    doc, summ = task.text_fields
    out = {}
    for split, ds in raw.items():
        enc = datasets.Dataset.from_dict({
            "input_ids": [encode_ids(tok, d, src_len) for d in ds[doc]],
            "labels": [encode_ids(tok, s, g["max_target_length"]) for s in ds[summ]],
        })  # fmt: skip
        out[split] = Split(enc, ds, str(split_file(task, split, data_dir) or task.hub))
    return out


def collator(tok):
    return pad_collator(tok)


def evaluate(cell, model, tok, data: dict[str, Split]) -> tuple[dict, list[dict]]:
    """ROUGE of beam-searched summaries per evaluation split, and one row per document."""
    task = cell.task
    g, device = gen(task), torch.device(cell.device)
    model.to(device).eval()
    collate = pad_collator(tok)
    doc, summ = task.text_fields
    metrics, rows = {}, []
    for split in task.eval_splits:
        raw, enc = data[split].examples, data[split].inputs
        preds = []
        for i in range(0, len(enc), g["batch_size"]):
            batch = collate([{"input_ids": enc[j]["input_ids"]} for j in range(i, min(i + g["batch_size"], len(enc)))])
            with torch.no_grad(), parametrize.cached():  # quantized weights once per batch, not per decoding step
                out = model.generate(
                    input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                    num_beams=g["num_beams"], max_new_tokens=g["max_target_length"],
                    min_new_tokens=g["min_target_length"], length_penalty=g["length_penalty"],
                    no_repeat_ngram_size=g["no_repeat_ngram_size"], early_stopping=True,
                )  # fmt: skip
            preds += [p.strip() for p in tok.batch_decode(out, skip_special_tokens=True)]
        refs = list(raw[summ])
        metrics[split] = {**rouge(preds, refs), "examples": len(preds),
                          "mean_generated_words": sum(len(p.split()) for p in preds) / max(len(preds), 1)}  # fmt: skip
        ids = raw[task.id_field] if task.id_field in raw.column_names else range(len(preds))
        rows += [{"split": split, "id": i, "reference": r, "prediction": p}
                 for i, r, p in zip(ids, refs, preds, strict=True)]  # fmt: skip
    return metrics, rows


def protocol(cell, model, tok, data: dict[str, Split], rows: list[dict]) -> dict:
    """How the numbers were computed, for the record."""
    task = cell.task
    g = gen(task)
    return {
        "metric": "ROUGE-1/2/L/Lsum F-measure x 100, mean over examples; rouge-score package, use_stemmer=True, "
        "its default tokenizer (lowercase, non-alphanumerics removed); rougeL = LCS of the whole texts; rougeLsum "
        "= summary-level union LCS over sentences (pysbd sentence splitter), the papers' ROUGE-L",
        "generation": {**{k: v for k, v in g.items() if k != "samples"}, "max_source_length": source_length(task, tok)},
        "sources": {s: d.source for s, d in data.items()},
        "samples": rows[: g["samples"]],
        "model_note": cell.model.note,
    }
