"""Response modelling on Persona-Chat (ParlAI text format) with a causal LM: perplexity and next-token accuracy
of the response tokens given the persona and the dialogue history.

Format (ParlAI `*_self_original_no_cands.txt`): lines `N your persona: ...` or `N <partner>\\t<reply>`; N restarts
at 1 with each dialogue. One example per (partner, reply) line:
  prompt   = the persona lines ("your persona: ...") and every earlier utterance of the dialogue, then the partner's
             utterance, one per line, each line ending in '\\n'
  response = the reply followed by the tokenizer's EOS token
Only the response tokens (including that EOS) are scored; the prompt is context. When prompt + response exceed
task.lm.context_length tokens (null = min(512, the model's maximum context)), the prompt is cut from the left.
Perplexity = exp(mean NLL over all response tokens of the split); token_accuracy = share of response tokens that
are the argmax prediction. train.max_eval_examples caps the number of examples (the first N).
"""

from __future__ import annotations

import random

import datasets
import torch
from torch.nn.utils import parametrize

from qbench.config import ModelSchema
from qbench.data import load_task_data, split_file
from qbench.errors import QbenchError
from qbench.kinds import Split
from qbench.kinds.causal_lm import load_model as _load_causal
from qbench.kinds.causal_lm import model_context
from qbench.kinds.generative import IGNORE, pad_collator, summarize, token_scores
from qbench.tasks import TaskSpec


def load_model(model_cfg: ModelSchema, task: TaskSpec, seed: int):
    model, tok = _load_causal(model_cfg, task, seed)
    tok.model_max_length = model_context(model)
    return model, tok


def budget(task: TaskSpec, tok) -> int:
    """Tokens per example: task.lm.context_length, default min(512, the model's maximum context)."""
    n = task.lm.context_length or min(512, tok.model_max_length)
    if n > tok.model_max_length:
        raise QbenchError(f"task.lm.context_length={n} exceeds the model's maximum {tok.model_max_length}")
    return int(n)


def parse_parlai(lines: list[str]) -> list[dict]:
    """ParlAI self_original lines -> [{dialog, turn, persona: [..], history: [..], partner, reply}]."""
    out, persona, history, dialog = [], [], [], -1
    for line in lines:
        if not line.strip():
            continue
        num, _, rest = line.partition(" ")
        if num == "1":
            dialog, persona, history = dialog + 1, [], []
        if rest.startswith("your persona:") or rest.startswith("partner's persona:"):
            persona.append(rest.strip())
            continue
        partner, _, reply = rest.partition("\t")
        reply = reply.split("\t")[0]  # files with candidates: reply \t\t cand|cand
        out.append({"dialog": dialog, "turn": len(history) // 2, "persona": list(persona),
                    "history": list(history), "partner": partner, "reply": reply})  # fmt: skip
        history += [partner, reply]
    return out


def encode_example(ex: dict, tok, max_tokens: int) -> dict:
    prompt = "".join(f"{x}\n" for x in (*ex["persona"], *ex["history"], ex["partner"]))
    p_ids = tok(prompt, add_special_tokens=False, verbose=False)["input_ids"]
    r_ids = tok(ex["reply"], add_special_tokens=False, verbose=False)["input_ids"] + [tok.eos_token_id]
    r_ids = r_ids[: max_tokens - 1]  # keep at least one prompt token as context
    p_ids = p_ids[len(p_ids) - (max_tokens - len(r_ids)) :] if len(p_ids) + len(r_ids) > max_tokens else p_ids
    return {"input_ids": p_ids + r_ids, "labels": [IGNORE] * len(p_ids) + r_ids}


def load_data(cell, tok, need_train: bool) -> dict[str, Split]:
    """{split: Split(encoded dataset, examples, source)}; the token budget per example is budget(task, tok)."""
    task, tr, data_dir = cell.task, cell.train, cell.data.data_dir
    if tok.eos_token_id is None:
        raise QbenchError("dialog tasks need a tokenizer with an EOS token")
    raw = load_task_data(task, data_dir, need_train, None, None, cell.seed)
    n_tokens = budget(task, tok)
    out = {}
    for split, ds in raw.items():
        exs = parse_parlai(list(ds[task.text_fields[0]]))
        if not exs:
            raise QbenchError(f"task {task.name}: no (partner, reply) lines in {split_file(task, split, data_dir)}")
        if split == task.train_split and need_train:
            cap = tr.max_train_examples
            if cap and cap < len(exs):
                exs = random.Random(cell.seed).sample(exs, cap)
        elif tr.max_eval_examples:
            exs = exs[: tr.max_eval_examples]
        enc = [encode_example(e, tok, n_tokens) for e in exs]
        source = str(split_file(task, split, data_dir) or task.hub)
        out[split] = Split(datasets.Dataset.from_list(enc), exs, source)
    return out


def collator(tok):
    return pad_collator(tok)


def evaluate(cell, model, tok, data: dict[str, Split]) -> tuple[dict, list[dict]]:
    """Perplexity and next-token accuracy of the response tokens of each evaluation split."""
    device = torch.device(cell.device)
    model.to(device).eval()
    collate, bs = pad_collator(tok), int(cell.train.eval_batch_size)
    metrics, rows = {}, []
    for split in cell.task.eval_splits:
        exs, enc = data[split].examples, data[split].inputs
        nll = n = correct = 0
        for i in range(0, len(enc), bs):
            batch = collate([enc[j] for j in range(i, min(i + bs, len(enc)))])
            with torch.no_grad(), parametrize.cached():
                logits = model(input_ids=batch["input_ids"].to(device),
                               attention_mask=batch["attention_mask"].to(device)).logits  # fmt: skip
            targets = batch["labels"][:, 1:].to(device)  # logit t predicts token t+1
            for j in range(logits.shape[0]):
                s = token_scores(logits[j, :-1], targets[j])
                nll, n, correct = nll + s[0], n + s[1], correct + s[2]
                ex = exs[i + j]
                rows.append({"split": split, "dialog": ex["dialog"], "turn": ex["turn"], "tokens": s[1],
                             "nll": s[0], "correct": s[2]})  # fmt: skip
        metrics[split] = {**summarize(nll, n, correct), "examples": len(enc)}
    return metrics, rows


def protocol(cell, model, tok, data: dict[str, Split], rows: list[dict]) -> dict:
    """How the numbers were computed, for the record."""
    return {
        "metric": "perplexity = exp(mean NLL in nats over all response tokens of the split); token_accuracy = "
        "share of response tokens equal to the argmax next-token prediction; tokens = response tokens scored",
        "example": "prompt = persona lines, earlier utterances and the partner's utterance, one per line "
        "('\\n'-terminated); response = reply + EOS; only response tokens (EOS included) are scored; prompt "
        "truncated from the left to fit context_length",
        "eos_token": tok.eos_token,
        "context_length": budget(cell.task, tok),
        "max_eval_examples": cell.train.max_eval_examples,
        "sources": {s: d.source for s, d in data.items()},
        "model_note": cell.model.note,
    }
