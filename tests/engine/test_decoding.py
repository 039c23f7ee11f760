"""Greedy and beam search with the key/value cache, and the length/repetition controls.

Most tests drive the search with a small table-driven language model whose next-token
distribution depends on the previous token only, so the right answer is known; the rest use
the tiny artifact's real exported decoder.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engine.artifact import DecodingDefaults
from engine.backends.base import StepOutput
from engine.decoding import DecodingConfig, TokenRules, beam_search, generate, greedy_search
from engine.runtime import Engine

BOS, EOS, PAD, UNK, SEC_A, SEC_B = 0, 1, 2, 3, 4, 5
RULES = TokenRules(bos=BOS, eos=EOS, pad=PAD, never=(BOS, PAD, UNK), at_most_once=(SEC_A, SEC_B))


class TableModel:
    """``logits = log(table[previous token])``; the cache only counts positions."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = np.log(np.clip(table, 1e-9, None)).astype(np.float32)
        self.calls = 0

    def step(self, tokens, cross_keys, cross_values, keys, values):  # type: ignore[no-untyped-def]
        self.calls += 1
        grown = np.concatenate([keys, np.zeros((*keys.shape[:3], 1, 1), np.float32)], axis=3)
        logits = self.table[tokens[:, 0]] + cross_keys[:, 0, 0, 0, :1]  # zeros: no shift
        return StepOutput(logits.astype(np.float32), grown, grown.copy())

    @staticmethod
    def empty(batch: int) -> tuple[np.ndarray, np.ndarray]:
        zeros = np.zeros((batch, 1, 1, 0, 1), np.float32)
        return zeros, zeros.copy()


def _table(vocab: int, rows: dict[int, dict[int, float]], default: dict[int, float]) -> np.ndarray:
    table = np.full((vocab, vocab), 1e-6)
    for prev in range(vocab):
        for tok, p in rows.get(prev, default).items():
            table[prev, tok] = p
    return table / table.sum(axis=1, keepdims=True)


def _cross(batch: int) -> tuple[np.ndarray, np.ndarray]:
    zeros = np.zeros((batch, 1, 1, 3, 4), np.float32)
    return zeros, zeros.copy()


def _run(model: TableModel, batch: int = 1, **config: object) -> list[list[int]]:
    return generate(model.step, model.empty, _cross(batch), DecodingConfig(**config), RULES)  # type: ignore[arg-type]


def test_beam_finds_the_better_hypothesis_greedy_misses() -> None:
    # From BOS: 6 is a bit likelier than 7; but 6 leads to a flat distribution, 7 to sure EOS.
    table = _table(
        8,
        {BOS: {6: 0.55, 7: 0.45}, 6: {EOS: 0.34, 6: 0.33, 7: 0.33}, 7: {EOS: 0.99, 6: 0.01}},
        {EOS: 1.0},
    )
    model = TableModel(table)
    assert _run(model, max_length=5) == [[6]]
    assert _run(model, max_length=5, num_beams=2) == [[7]]


def test_greedy_equals_beam_with_one_beam_on_random_tables() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        table = rng.dirichlet(np.ones(12) * 0.3, size=12)
        model = TableModel(table)
        config = DecodingConfig(max_length=15, min_length=2, repetition_penalty=1.2)
        cross = _cross(3)
        assert greedy_search(model.step, model.empty, cross, config, RULES) == beam_search(
            model.step, model.empty, cross, config, RULES
        )


def test_min_and_max_length() -> None:
    always_eos = TableModel(_table(8, {}, {EOS: 0.9, 6: 0.1}))
    assert _run(always_eos, max_length=10) == [[]]
    assert len(_run(always_eos, max_length=10, min_length=3)[0]) == 3
    never_eos = TableModel(_table(8, {}, {6: 0.6, 7: 0.4}))
    out = _run(never_eos, max_length=7)
    assert len(out[0]) == 7
    assert never_eos.calls == 7


def test_no_repeat_ngram() -> None:
    loop = TableModel(_table(10, {}, {6: 0.5, 7: 0.3, 8: 0.2}))
    assert _run(loop, max_length=6) == [[6] * 6]
    unigram = _run(loop, max_length=6, no_repeat_ngram_size=1)[0]
    assert len(unigram) == len(set(unigram))
    bigram = _run(loop, max_length=8, no_repeat_ngram_size=2)[0]
    pairs = list(itertools.pairwise(bigram))
    assert len(pairs) == len(set(pairs))


def test_repetition_penalty_reduces_repeats() -> None:
    rng = np.random.default_rng(3)
    logits = np.zeros((10, 10))
    logits[:, 6:] = rng.normal(size=(10, 4)) * 0.1 + np.array([2.0, 1.6, 1.4, 1.2])
    table = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    model = TableModel(table)
    plain = _run(model, max_length=12)[0]
    penalized = _run(model, max_length=12, repetition_penalty=3.0)[0]
    assert len(set(plain)) == 1
    assert len(set(penalized)) > 1


def test_structural_rules() -> None:
    # BOS, PAD and UNK are the likeliest tokens and sections repeat: none of that may come out.
    table = _table(8, {}, {BOS: 0.3, PAD: 0.2, UNK: 0.2, SEC_A: 0.15, SEC_B: 0.1, 6: 0.05})
    out = _run(TableModel(table), max_length=6, num_beams=2)[0]
    assert not {BOS, PAD, UNK} & set(out)
    assert out.count(SEC_A) <= 1 and out.count(SEC_B) <= 1


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="num_beams"):
        DecodingConfig(num_beams=0)
    with pytest.raises(ValueError, match="min_length"):
        DecodingConfig(max_length=4, min_length=5)
    with pytest.raises(ValueError, match="repetition_penalty"):
        DecodingConfig(repetition_penalty=0)
    with pytest.raises(TypeError, match="temperature"):
        DecodingConfig.from_defaults(DecodingDefaults(), temperature=0.7)
    assert DecodingConfig.from_defaults(DecodingDefaults(max_length=9), num_beams=2) == (
        DecodingConfig(num_beams=2, max_length=9)
    )


@pytest.mark.parametrize("num_beams", [1, 3])
def test_real_decoder_batching_matches_one_at_a_time(ort_engine: Engine, num_beams: int) -> None:
    backend = ort_engine.backend
    rng = np.random.default_rng(7)
    encoded = backend.encode(rng.standard_normal((3, 1, 64, 64), dtype=np.float32))
    cross = (encoded.cross_keys, encoded.cross_values)
    config = DecodingConfig(
        num_beams=num_beams, max_length=12, min_length=2, no_repeat_ngram_size=2
    )
    batched = generate(backend.decode_step, backend.empty_cache, cross, config, ort_engine.rules)
    single = [
        generate(
            backend.decode_step,
            backend.empty_cache,
            (cross[0][i : i + 1], cross[1][i : i + 1]),
            config,
            ort_engine.rules,
        )[0]
        for i in range(3)
    ]
    assert batched == single
    assert all(2 <= len(ids) <= 12 for ids in batched)


def test_real_decoder_greedy_equals_one_beam(ort_engine: Engine) -> None:
    backend = ort_engine.backend
    encoded = backend.encode(
        np.random.default_rng(8).standard_normal((2, 1, 64, 64), dtype=np.float32)
    )
    config = DecodingConfig(max_length=16, min_length=3)
    cross = (encoded.cross_keys, encoded.cross_values)
    args = (backend.decode_step, backend.empty_cache, cross, config, ort_engine.rules)
    assert greedy_search(*args) == beam_search(*args)
