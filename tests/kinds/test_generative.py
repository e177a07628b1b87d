"""LM metrics on hand-made cases: perplexity from known logits, window/stride accounting, response masking."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from qbench.kinds.dialog import encode_example, parse_parlai
from qbench.kinds.generative import IGNORE, lm_windows, pad_collator, perplexity, rouge, token_scores

V = 7


class Bigram(nn.Module):
    """Logits depend only on the current token (a lookup table), so windowing cannot change any score."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def cyclic_model(q: float) -> Bigram:
    """After token x, token (x+1) % V has probability q, every other token (1-q)/(V-1)."""
    p = torch.full((V, V), (1 - q) / (V - 1))
    for x in range(V):
        p[x, (x + 1) % V] = q
    return Bigram(p.log())


@pytest.mark.parametrize("context,stride", [(4, 4), (4, 1), (4, 3), (5, 2), (100, 100)])
def test_perplexity_of_known_distribution(context, stride):
    ids = [i % V for i in range(23)]  # 22 targets, each of probability 0.6
    m, rows = perplexity(cyclic_model(0.6), ids, context, stride, batch_windows=2)
    assert m["tokens"] == 22 == sum(r["scored"] for r in rows)
    assert m["perplexity"] == pytest.approx(1 / 0.6, rel=1e-5)
    assert m["loss"] == pytest.approx(-math.log(0.6), rel=1e-5)
    assert m["token_accuracy"] == 1.0


def test_uniform_logits_give_vocab_size():
    m, _ = perplexity(Bigram(torch.zeros(V, V)), [0, 3, 1, 6, 2, 2, 5], context=3, stride=3)
    assert m["perplexity"] == pytest.approx(V) and m["tokens"] == 6


def test_windowing_does_not_change_a_bigram_score():
    torch.manual_seed(0)
    model = Bigram(torch.randn(V, V))
    ids = torch.randint(0, V, (50,)).tolist()
    direct = torch.nn.functional.cross_entropy(model.table[torch.tensor(ids[:-1])], torch.tensor(ids[1:]))
    for c, s in [(8, 8), (8, 3), (49, 49), (64, 64), (2, 1)]:
        m, _ = perplexity(model, ids, c, s, batch_windows=3)
        assert m["loss"] == pytest.approx(direct.item(), rel=1e-5), (c, s)


@pytest.mark.parametrize("n", [2, 3, 10, 17, 64, 65])
@pytest.mark.parametrize("context,stride", [(1, 1), (4, 4), (4, 1), (4, 2), (8, 5), (16, 16)])
def test_every_token_scored_exactly_once(n, context, stride):
    windows = lm_windows(n, context, stride)
    scored = [t for w in windows for t in range(w.first, w.end + 1)]
    assert sorted(scored) == list(range(1, n)) and len(scored) == len(set(scored))
    for k, w in enumerate(windows):
        assert 0 < w.end - w.begin <= context  # inputs fit the context
        assert w.begin < w.first <= w.end + 1 and w.end <= n - 1  # a target's predecessor is an input
        if k and w.end - w.begin == context:  # a full later window: each new target has >= context-stride context
            assert w.first - w.begin >= context - stride
    if stride == context:  # disjoint input windows, each scoring `context` targets (the last may score fewer)
        assert all(b.begin == a.end for a, b in zip(windows, windows[1:], strict=False))
        assert all(w.n_scored == context for w in windows[:-1])
    else:
        assert all(w.n_scored == stride for w in windows[1:-1])


def test_window_count_and_bad_stride():
    assert len(lm_windows(1 + 1024 * 3, 1024)) == 3  # 3072 targets in 3 disjoint windows
    assert len(lm_windows(1 + 1024 + 1, 1024)) == 2
    with pytest.raises(ValueError):
        lm_windows(10, 4, 5)


def test_token_scores_ignores_masked_targets():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]]))
    nll, n, correct = token_scores(logits, torch.tensor([0, IGNORE, 2]))
    assert n == 2 and correct == 1
    assert nll == pytest.approx(-math.log(0.5) - math.log(0.1), rel=1e-6)


class CharTok:
    """Whitespace-free toy tokenizer: one id per character (ord), EOS = 0."""

    eos_token_id = pad_token_id = 0

    def __call__(self, text, add_special_tokens=False, verbose=False):
        return {"input_ids": [ord(c) for c in text]}


def test_parlai_parsing_and_response_only_labels():
    lines = ["1 your persona: i like cats.", "2 hi\thello", "3 how are you?\tfine", "1 your persona: x.", "2 a\tb"]
    exs = parse_parlai(lines)
    assert [(e["dialog"], e["turn"], e["partner"], e["reply"]) for e in exs] == [
        (0, 0, "hi", "hello"), (0, 1, "how are you?", "fine"), (1, 0, "a", "b")]  # fmt: skip
    assert exs[1]["history"] == ["hi", "hello"] and exs[1]["persona"] == ["your persona: i like cats."]
    enc = encode_example(exs[1], CharTok(), 1000)
    prompt = "your persona: i like cats.\nhi\nhello\nhow are you?\n"
    assert enc["input_ids"] == [ord(c) for c in prompt + "fine"] + [0]
    assert enc["labels"] == [IGNORE] * len(prompt) + [ord(c) for c in "fine"] + [0]
    short = encode_example(exs[1], CharTok(), 8)  # the prompt is cut from the left, the response kept
    assert len(short["input_ids"]) == 8 and short["labels"][-5:] == [ord(c) for c in "fine"] + [0]
    assert short["input_ids"][:3] == [ord(c) for c in "u?\n"] and short["labels"][:3] == [IGNORE] * 3


def test_pad_collator_pads_labels_with_ignore():
    batch = pad_collator(CharTok())(
        [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]


def test_rouge_with_stemming():
    r = rouge(["the cats were running"], ["the cat was running"])
    assert r["rouge1"] == pytest.approx(100 * 3 / 4)  # the, cat(s), running match after stemming; was/were don't
    assert rouge(["a b c"], ["a b c"]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0, "rougeLsum": 100.0}


def test_rouge_lsum_is_summary_level_over_sentences():
    # 6 tokens each; the longest common subsequence of the whole texts is 3 tokens ("the cat sat" or "the dog
    # ran"): rougeL = 50. Sentence by sentence, each reference sentence is matched in full by one predicted
    # sentence: the union LCS covers all 6 tokens, rougeLsum = 100 (what the summarization papers report as R-L).
    r = rouge(["The dog ran. The cat sat."], ["The cat sat. The dog ran."])
    assert r["rougeL"] == pytest.approx(50.0) and r["rougeLsum"] == pytest.approx(100.0)
    assert r["rouge1"] == pytest.approx(100.0)  # sentence splitting changes rougeLsum only


def test_sentences_are_split_by_a_real_splitter():
    from qbench.kinds.generative import sentences

    assert sentences("Dr. Smith paid $3.50 for it. He left.\nThen it rained") == (
        "Dr. Smith paid $3.50 for it.\nHe left.\nThen it rained"
    )
