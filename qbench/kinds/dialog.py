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

from collections.abc import Mapping

from omegaconf import DictConfig

from qbench.data import load_task_data, split_file
from qbench.errors import QbenchError
from qbench.kinds.causal_lm import load_model as _load_causal
from qbench.kinds.causal_lm import model_context
from qbench.kinds.generative import IGNORE, eval_device, pad_collator, summarize, token_scores
from qbench.tasks import TaskSpec


def load_model(model_cfg: Mapping, task: TaskSpec, seed: int):
    model, tok = _load_causal(model_cfg, task, seed)
    tok.model_max_length = model_context(model)
    return model, tok


def budget(task: TaskSpec, tok) -> int:
    """Tokens per example: task.lm.context_length, default min(512, the model's maximum context)."""
    n = task.lm.get("context_length") or min(512, tok.model_max_length)
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


def load_data(task: TaskSpec, tok, cfg: DictConfig, need_train: bool) -> dict:
    """{split: (examples, encoded dataset)}; the token budget per example is budget(task, tok)."""
    import datasets

    if tok.eos_token_id is None:
        raise QbenchError("dialog tasks need a tokenizer with an EOS token")
    raw = load_task_data(task, cfg.data_dir, need_train, None, None, cfg.seed)
    n_tokens = budget(task, tok)
    out = {}
    for split, ds in raw.items():
        exs = parse_parlai(list(ds[task.text_fields[0]]))
        if not exs:
            raise QbenchError(f"task {task.name}: no (partner, reply) lines in {split_file(task, split, cfg.data_dir)}")
        if split == task.train_split and need_train:
            cap = cfg.train.max_train_examples
            if cap and cap < len(exs):
                import random

                exs = random.Random(cfg.seed).sample(exs, cap)
        elif cfg.train.max_eval_examples:
            exs = exs[: cfg.train.max_eval_examples]
        enc = [encode_example(e, tok, n_tokens) for e in exs]
        out[split] = (exs, datasets.Dataset.from_list(enc))
    return out


def collator(tok):
    return pad_collator(tok)


def evaluate(model, tok, task: TaskSpec, data: dict, cfg: DictConfig) -> tuple[dict, list[dict]]:
    import torch
    from torch.nn.utils import parametrize

    device = eval_device(cfg)
    model.to(device).eval()
    collate, bs = pad_collator(tok), int(cfg.train.eval_batch_size)
    metrics, rows = {}, []
    for split in task.eval_splits:
        exs, enc = data[split]
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


def protocol(model, tok, task: TaskSpec, data: dict, cfg: DictConfig, rows: list[dict]) -> dict:
    return {
        "metric": "perplexity = exp(mean NLL in nats over all response tokens of the split); token_accuracy = "
        "share of response tokens equal to the argmax next-token prediction; tokens = response tokens scored",
        "example": "prompt = persona lines, earlier utterances and the partner's utterance, one per line "
        "('\\n'-terminated); response = reply + EOS; only response tokens (EOS included) are scored; prompt "
        "truncated from the left to fit context_length",
        "eos_token": tok.eos_token,
        "context_length": budget(task, tok),
        "max_eval_examples": cfg.train.max_eval_examples,
        "sources": {s: str(split_file(task, s, cfg.data_dir) or task.hub) for s in data},
        "model_note": cfg.model.get("note"),
    }
