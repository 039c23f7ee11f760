"""Text generation over the exported decoder step: greedy and beam search, batched.

All studies (and all beams of a study) step together through one ``decode_step`` call per
token, feeding the key/value cache back in; beam search reorders the cache with a gather.
Controls: ``max_length``, ``min_length`` (EOS banned until reached), ``length_penalty``
(hypotheses ranked by ``log p / length ** length_penalty``), ``repetition_penalty`` (CTRL) and
``no_repeat_ngram_size``. Structural rules from the artifact: BOS/PAD/UNK are never generated
and each section token appears at most once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.artifact import DecodingDefaults, EngineArtifact, TokenizerSpec
from engine.backends.base import EncoderOutput, StepOutput
from engine.exceptions import ArtifactError

logger = logging.getLogger(__name__)

Array = NDArray[np.float32]
#: ``decode_step(tokens, cross_keys, cross_values, past_keys, past_values)``
StepFn = Callable[[NDArray[np.int64], Array, Array, Array, Array], StepOutput]
#: The image keys/values of each study, ``[B, layers, heads, S, head_dim]`` each.
CrossCache = tuple[Array, Array]
CacheFn = Callable[[int], tuple[NDArray[np.float32], NDArray[np.float32]]]


@dataclass(frozen=True)
class DecodingConfig:
    num_beams: int = 1
    max_length: int = 64
    min_length: int = 0
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
        if not 0 <= self.min_length <= self.max_length:
            raise ValueError(f"min_length must be in [0, max_length], got {self.min_length}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")

    @classmethod
    def from_defaults(cls, defaults: DecodingDefaults, **overrides: Any) -> DecodingConfig:
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown decoding options {sorted(unknown)}")
        return replace(cls(**defaults.model_dump()), **overrides)


@dataclass(frozen=True)
class TokenRules:
    """Token ids the decoder treats specially."""

    bos: int
    eos: int
    pad: int
    never: tuple[int, ...] = ()
    at_most_once: tuple[int, ...] = field(default_factory=tuple)

    @classmethod
    def from_spec(cls, spec: TokenizerSpec) -> TokenRules:
        never = [spec.bos_id, spec.pad_id] + ([spec.unk_id] if spec.unk_id is not None else [])
        return cls(
            spec.bos_id, spec.eos_id, spec.pad_id, tuple(never), tuple(spec.section_tokens.values())
        )


class FindingPrompt:
    """The artifact's findings prompt table: each finding's keys/values for each state.

    :meth:`cross` turns the states the engine predicted (indices into the manifest's
    ``prompt.states``, one per finding) into the prompt part of the decoder's memory.
    """

    def __init__(self, artifact: EngineArtifact) -> None:
        manifest = artifact.manifest
        spec = manifest.prompt
        if spec is None:
            raise ArtifactError(f"{artifact.root}: the artifact has no findings prompt")
        path = artifact.path(spec.file)
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = np.asarray(data["keys"], dtype=np.float32)
                values = np.asarray(data["values"], dtype=np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactError(
                f"{path}: not a findings prompt table ({exc}); re-export the engine",
                path=spec.file,
            ) from exc
        dec = manifest.decoder
        want = (len(spec.states), dec.num_layers, dec.num_heads, len(manifest.findings),
                dec.head_dim)
        if keys.shape != want or values.shape != want:
            raise ArtifactError(
                f"{path}: prompt table has shape {keys.shape}/{values.shape}, the manifest "
                f"needs {want}; re-export the engine",
                path=spec.file,
            )
        self.states = spec.states
        # [findings, states, layers, heads, head_dim]: one gather picks every finding's row.
        self._keys = np.ascontiguousarray(keys.transpose(3, 0, 1, 2, 4))
        self._values = np.ascontiguousarray(values.transpose(3, 0, 1, 2, 4))

    def cross(self, states: NDArray[np.int64]) -> CrossCache:
        """``states[B, F]`` -> prompt keys and values ``[B, layers, heads, F, head_dim]``."""
        columns = np.arange(self._keys.shape[0])[None, :]
        keys = self._keys[columns, states]  # [B, F, layers, heads, head_dim]
        values = self._values[columns, states]
        return (
            np.ascontiguousarray(keys.transpose(0, 2, 3, 1, 4)),
            np.ascontiguousarray(values.transpose(0, 2, 3, 1, 4)),
        )


def decoder_memory(
    memory: tuple[str, ...],
    encoded: EncoderOutput,
    rows: list[int],
    prompt: FindingPrompt | None,
    states: NDArray[np.int64] | None,
) -> CrossCache:
    """The decoder's keys/values for the studies ``rows`` of ``encoded``: image tokens and/or
    the findings prompt, in the order the manifest's ``decoder.memory`` names them."""
    keys: list[Array] = []
    values: list[Array] = []
    for kind in memory:
        if kind == "image":
            keys.append(encoded.cross_keys[rows])
            values.append(encoded.cross_values[rows])
        else:
            if prompt is None or states is None:
                raise ArtifactError("the decoder attends to the findings prompt; none was loaded")
            k, v = prompt.cross(states[rows])
            keys.append(k)
            values.append(v)
    if len(keys) == 1:
        return np.ascontiguousarray(keys[0]), np.ascontiguousarray(values[0])
    return (
        np.ascontiguousarray(np.concatenate(keys, axis=3)),
        np.ascontiguousarray(np.concatenate(values, axis=3)),
    )


def _log_softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _banned_ngram_tokens(sequence: list[int], size: int) -> set[int]:
    if size <= 0 or len(sequence) < size - 1:
        return set()
    if size == 1:
        return set(sequence)
    prefix = tuple(sequence[len(sequence) - size + 1 :])
    return {
        sequence[i + size - 1]
        for i in range(len(sequence) - size + 1)
        if tuple(sequence[i : i + size - 1]) == prefix
    }


def _scores(
    logits: NDArray[np.float32],
    sequences: list[list[int]],
    config: DecodingConfig,
    rules: TokenRules,
) -> NDArray[np.float64]:
    """Next-token log-probabilities with every control applied (banned tokens at -inf)."""
    work = logits.astype(np.float64)
    for row, sequence in enumerate(sequences):
        if config.repetition_penalty != 1.0 and sequence:
            seen = np.unique(np.asarray(sequence))
            values = work[row, seen]
            work[row, seen] = np.where(
                values > 0, values / config.repetition_penalty, values * config.repetition_penalty
            )
    logp = _log_softmax(work)
    logp[:, list(rules.never)] = -np.inf
    for row, sequence in enumerate(sequences):
        if len(sequence) < config.min_length:
            logp[row, rules.eos] = -np.inf
        banned = _banned_ngram_tokens(sequence, config.no_repeat_ngram_size)
        banned.update(t for t in rules.at_most_once if t in sequence)
        if banned:
            logp[row, list(banned)] = -np.inf
    return logp


def greedy_search(
    step: StepFn,
    empty_cache: CacheFn,
    cross: CrossCache,
    config: DecodingConfig,
    rules: TokenRules,
) -> list[list[int]]:
    """Most probable token at each step; returns each study's ids without BOS/EOS."""
    cross_keys, cross_values = cross
    batch = cross_keys.shape[0]
    keys, values = empty_cache(batch)
    tokens = np.full((batch, 1), rules.bos, dtype=np.int64)
    sequences: list[list[int]] = [[] for _ in range(batch)]
    finished = np.zeros(batch, dtype=bool)
    for _ in range(config.max_length):
        out = step(tokens, cross_keys, cross_values, keys, values)
        keys, values = out.keys, out.values
        chosen = _scores(out.logits, sequences, config, rules).argmax(axis=-1)
        for row, token in enumerate(chosen.tolist()):
            if finished[row]:
                continue
            if token == rules.eos:
                finished[row] = True
            else:
                sequences[row].append(token)
        if finished.all():
            break
        tokens = np.where(finished, rules.pad, chosen).astype(np.int64)[:, None]
    return sequences


def beam_search(
    step: StepFn,
    empty_cache: CacheFn,
    cross: CrossCache,
    config: DecodingConfig,
    rules: TokenRules,
) -> list[list[int]]:
    """Beam search; a finished beam stays in the beam with its score frozen, so one beam is
    exactly greedy search."""
    batch, beams = cross[0].shape[0], config.num_beams
    rows = batch * beams
    # Beams of a study share its image keys/values; they never need reordering.
    cross_keys, cross_values = (np.repeat(c, beams, axis=0) for c in cross)
    keys, values = empty_cache(rows)
    tokens = np.full((rows, 1), rules.bos, dtype=np.int64)
    sequences: list[list[int]] = [[] for _ in range(rows)]
    finished = np.zeros(rows, dtype=bool)
    lengths = np.zeros(rows, dtype=np.int64)  # generated tokens, EOS included
    scores = np.zeros((batch, beams))
    scores[:, 1:] = -np.inf  # all beams start identical: expand only the first
    for _ in range(config.max_length):
        out = step(tokens, cross_keys, cross_values, keys, values)
        logp = _scores(out.logits, sequences, config, rules)
        logp[finished] = -np.inf
        logp[finished, rules.pad] = 0.0  # frozen continuation of a finished hypothesis
        vocab = logp.shape[1]
        total = scores.reshape(rows, 1) + logp
        new_len = np.where(finished, lengths, lengths + 1).astype(np.float64)
        with np.errstate(invalid="ignore"):
            ranked = total / np.maximum(new_len, 1.0)[:, None] ** config.length_penalty
        ranked = ranked.reshape(batch, beams * vocab)
        best = np.argsort(-ranked, axis=1, kind="stable")[:, :beams]
        origin = (np.arange(batch)[:, None] * beams + best // vocab).reshape(-1)
        chosen = (best % vocab).reshape(-1)
        scores = np.take_along_axis(total.reshape(batch, beams * vocab), best, axis=1)
        new_sequences, new_finished = [], np.zeros(rows, dtype=bool)
        for row, (source, token) in enumerate(zip(origin.tolist(), chosen.tolist(), strict=True)):
            sequence = list(sequences[source])
            if finished[source] or token == rules.eos:
                new_finished[row] = True
            else:
                sequence.append(token)
            new_sequences.append(sequence)
        lengths = new_len[origin].astype(np.int64)
        sequences, finished = new_sequences, new_finished
        keys, values = out.keys[origin], out.values[origin]
        if finished.all():
            break
        tokens = np.where(finished, rules.pad, chosen).astype(np.int64)[:, None]
    final = (
        scores.reshape(rows) / np.maximum(lengths, 1).astype(np.float64) ** config.length_penalty
    )
    results = []
    for study in range(batch):
        block = final[study * beams : (study + 1) * beams]
        results.append(sequences[study * beams + int(np.argmax(block))])
    return results


def generate(
    step: StepFn,
    empty_cache: CacheFn,
    cross: CrossCache,
    config: DecodingConfig,
    rules: TokenRules,
) -> list[list[int]]:
    """Token ids for each study of ``cross`` (BOS and EOS stripped)."""
    if cross[0].shape[0] == 0:
        return []
    if config.num_beams == 1:
        return greedy_search(step, empty_cache, cross, config, rules)
    return beam_search(step, empty_cache, cross, config, rules)
