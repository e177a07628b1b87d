"""What the generative kinds (causal_lm, dialog, summarization) share: padding, perplexity windows, token scores, ROUGE.

Perplexity is exp(mean negative log-likelihood, in nats, of the scored tokens); token accuracy is the share of
scored tokens that are the model's argmax prediction. Both are per model token (the model's own tokenizer).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100  # label of a position that is not scored (HF convention)


@dataclass(frozen=True)
class Window:
    """One forward pass over inputs tokens[begin:end]; its logits at positions first-1 .. end-1 score the
    targets tokens[first:end+1] (the token after the window's last input is scored from its last logit)."""

    begin: int
    end: int
    first: int  # first target position scored by this window

    @property
    def n_scored(self) -> int:
        return self.end + 1 - self.first


def lm_windows(n: int, context: int, stride: int | None = None) -> list[Window]:
    """Windows over a sequence of n tokens whose targets are positions 1..n-1 (position 0 is the document-start
    prefix, never scored), each target scored exactly once.

    Window k takes the inputs tokens[k*stride : k*stride + context] and scores the targets it predicts that no
    earlier window scored. stride = context (default): disjoint input windows, each scoring `context` tokens (its
    last logit predicts the next window's first token). stride < context: a sliding window; each target after
    the first window has at least context - stride tokens of context, and only the stride new tokens are scored.
    """
    stride = context if stride is None else stride
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be in 1..context ({context}), got {stride}")
    out, scored, begin = [], 0, 0  # scored: last target position scored so far
    while scored < n - 1:
        end = min(begin + context, n - 1)  # inputs [begin, end) predict targets begin+1 .. end
        out.append(Window(begin, end, scored + 1))
        scored, begin = end, begin + stride
    return out


def token_scores(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, int, int]:
    """(summed NLL in nats, tokens scored, tokens predicted right) of logits (..., vocab) for targets (...);
    targets equal to IGNORE are not scored. Computed in float64 for the sum."""
    logits = logits.reshape(-1, logits.shape[-1]).float()
    targets = targets.reshape(-1)
    keep = targets != IGNORE
    logits, targets = logits[keep], targets[keep]
    nll = F.cross_entropy(logits, targets, reduction="sum").double().item()
    correct = int((logits.argmax(-1) == targets).sum().item())
    return nll, int(targets.numel()), correct


def summarize(nll: float, tokens: int, correct: int) -> dict[str, float]:
    """perplexity, loss (mean NLL, nats/token), token_accuracy and the token count they are over."""
    loss = nll / tokens if tokens else math.nan
    return {"perplexity": math.exp(loss) if tokens else math.nan, "loss": loss,
            "token_accuracy": correct / tokens if tokens else math.nan, "tokens": tokens}  # fmt: skip


@torch.no_grad()
def perplexity(model, ids: list[int], context: int, stride: int | None, batch_windows: int = 1):
    """Sliding-window scores of one token sequence (ids[0] = the document-start prefix, not scored).
    Returns (summarize(...) + windows, per-window rows)."""
    device = next(model.parameters()).device
    seq = torch.tensor(ids, dtype=torch.long)
    windows = lm_windows(len(ids), context, stride)
    nll = tokens = correct = 0
    rows = []
    for i in range(0, len(windows), batch_windows):
        chunk = windows[i : i + batch_windows]
        width = max(w.end - w.begin for w in chunk)
        inputs = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        targets = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
        for j, w in enumerate(chunk):
            inputs[j, : w.end - w.begin] = seq[w.begin : w.end]
            mask[j, : w.end - w.begin] = 1
            # logit at input position p (absolute begin+p) predicts the token at begin+p+1
            lo = w.first - 1 - w.begin
            targets[j, lo : w.end - w.begin] = seq[w.first : w.end + 1]
        logits = model(input_ids=inputs.to(device), attention_mask=mask.to(device)).logits
        for j, w in enumerate(chunk):
            s = token_scores(logits[j], targets[j].to(device))
            nll, tokens, correct = nll + s[0], tokens + s[1], correct + s[2]
            rows.append({"window": i + j, "begin": w.begin, "end": w.end, "scored": s[1], "nll": s[0],
                         "correct": s[2]})  # fmt: skip
    return {**summarize(nll, tokens, correct), "windows": len(windows)}, rows


def pad_collator(tok):
    """Right-pads input_ids (with the pad id), attention_mask (0) and labels (IGNORE) to the batch's longest."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def collate(features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        out = {"input_ids": [], "attention_mask": []}
        if "labels" in features[0]:
            out["labels"] = []
        for f in features:
            n = len(f["input_ids"])
            out["input_ids"].append(list(f["input_ids"]) + [pad] * (width - n))
            out["attention_mask"].append([1] * n + [0] * (width - n))
            if "labels" in out:
                lab = list(f["labels"])
                out["labels"].append(lab + [IGNORE] * (max(len(g["labels"]) for g in features) - len(lab)))
        return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}

    return collate


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@functools.lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


def sentences(text: str) -> str:
    """text with one sentence per line, as rougeLsum reads it (pysbd: rule-based, English, needs no data files)."""
    return "\n".join(s.strip() for s in _segmenter().segment(text) if s.strip())


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F-measure x 100 (rouge-score package, Porter stemming on, its default tokenizer).
    rougeL: LCS of the whole texts; rougeLsum: summary-level union LCS over sentences (split by `sentences`), the
    ROUGE-L of the summarization papers (XSum, CNN/DailyMail). Newlines don't change the other three scores."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for p, r in zip(predictions, references, strict=True):
        for k, v in scorer.score(sentences(r), sentences(p)).items():
            totals[k] += v.fmeasure
    n = max(len(predictions), 1)
    return {k: 100 * v / n for k, v in totals.items()}
