"""A report decoder on the IU X-Ray test split with the findings given (no images exist).

Each test report's prompt is its reference findings: the English labeler on the English report
(as training builds prompts with ``text.prompt_labels = "labeler"``), "no finding" absent where
another finding is present, unspoken findings absent. The decoder of a training checkpoint
writes greedily (the engine's own :func:`engine.decoding.generate`) and the text is scored:

- how many distinct reports it wrote (a decoder that ignores its prompt writes one or two);
- the clinical F1 of the generated text, read by the Spanish labeler (both sections), against
  the prompt findings on the prompt's finding set (micro and macro);
- BLEU-4 and CIDEr of the findings section against the Spanish references the bridge derives
  from the English FINDINGS (the IU X-Ray protocol: FINDINGS only, R2Gen's cleaning);
- how often the runtime's neural-text check (:func:`engine.writers.check.contradictions`)
  would replace the text, taking the prompt as the coded findings;

each with a 95% bootstrap interval over patients (:mod:`training.metrics.bootstrap`). The
same figures for a constant normal report and for the structured writer's text from the same
findings (:func:`score_texts`) stand beside it. Nothing is written to disk here: the IU X-Ray
licence forbids publishing the reports or their translation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from engine.artifact import PROMPT_STATES
from engine.decoding import DecodingConfig, TokenRules, generate
from engine.labeler import get_labeler
from engine.result import FindingCode, FindingResult
from training.data.records import StudyRecord
from training.findings import Presence, get_finding
from training.metrics.bootstrap import Resampler, bootstrap_ci
from training.metrics.clinical import clinical_scores
from training.metrics.nlg import NLGCorpus, nlg_intervals
from training.models.cxr_report import CXRReportModel
from training.train.data import prompt_states, with_implied_no_finding

logger = logging.getLogger(__name__)

#: A prompt state's probability for the check and the structured writer (no model scores it).
STATE_PROBABILITY = {"absent": 0.05, "uncertain": 0.5, "present": 0.95}


@dataclass
class FindingsGiven:
    """The test studies, their prompts and their Spanish FINDINGS references ("" if none)."""

    records: list[StudyRecord]
    keys: tuple[str, ...]
    states: np.ndarray  # [N, F] indices into PROMPT_STATES
    references: list[str]

    def prompt(self, row: int) -> dict[str, Presence]:
        return {
            k: cast(Presence, PROMPT_STATES[int(s)])
            for k, s in zip(self.keys, self.states[row], strict=True)
        }

    def coded(self, row: int) -> list[FindingResult]:
        """The prompt as the engine's coded findings (what the check compares against)."""
        out = []
        for key, presence in self.prompt(row).items():
            f = get_finding(key)
            code = FindingCode(f.code_value, f.code_scheme, f.name_es, f.name_en)
            out.append(FindingResult(key, code, presence, STATE_PROBABILITY[presence]))
        return out


def findings_given(
    iu_root: Path, keys: Sequence[str], split: str = "test", *, limit: int = 0
) -> FindingsGiven:
    """The ``split``'s studies with an English report (the first ``limit``; 0: all)."""
    from training.bridge.references import with_spanish_references
    from training.data.iu_xray import IUXRayDataset

    records = [r for r in IUXRayDataset(iu_root, split=split) if r.report("en")]
    records = records[:limit] if limit else records
    labeler = get_labeler("en")
    states = np.array(
        [
            prompt_states(
                with_implied_no_finding(labeler.label(r.report("en"), sections=False)), keys
            )
            for r in records
        ],
        dtype=np.int64,
    ).reshape(len(records), len(keys))
    spanish = with_spanish_references(records)
    refs = [r.report("es", ("findings",)) for r in spanish]
    return FindingsGiven(records, tuple(keys), states, refs)


@torch.no_grad()
def generate_texts(
    model: CXRReportModel,
    tokenizer: Any,
    states: np.ndarray,
    *,
    max_length: int = 100,
    batch: int = 64,
) -> list[dict[str, str]]:
    """Greedy reports of ``model``'s decoder for each prompt: section title -> text."""
    from training.models.tokenizer import BOS, EOS, PAD, SECTION_TOKENS, UNK, token_id

    model.eval()
    section_ids = {token_id(tokenizer, tok): title for title, tok in SECTION_TOKENS.items()}
    rules = TokenRules(
        token_id(tokenizer, BOS),
        token_id(tokenizer, EOS),
        token_id(tokenizer, PAD),
        (token_id(tokenizer, BOS), token_id(tokenizer, PAD), token_id(tokenizer, UNK)),
        tuple(section_ids),
    )
    config = DecodingConfig(max_length=min(max_length, model.config.max_positions - 1))
    decoder = model.decoder

    def step(tokens: Any, ck: Any, cv: Any, pk: Any, pv: Any) -> Any:
        from engine.backends.base import StepOutput

        logits, keys, values = decoder(*(torch.from_numpy(a) for a in (tokens, ck, cv, pk, pv)))
        return StepOutput(logits[:, -1].numpy(), keys.numpy(), values.numpy())

    def empty(n: int) -> tuple[np.ndarray, np.ndarray]:
        cache = decoder.empty_cache(n).numpy()
        return cache, cache

    out: list[dict[str, str]] = []
    for start in range(0, len(states), batch):
        rows = torch.from_numpy(states[start : start + batch])
        keys, values = model.decoder_cross(None, rows)
        for ids in generate(step, empty, (keys.numpy(), values.numpy()), config, rules):
            parts: dict[str, list[int]] = {"Hallazgos": []}
            current = "Hallazgos"
            for token in ids:
                if token in section_ids:
                    current = section_ids[token]
                    parts.setdefault(current, [])
                else:
                    parts[current].append(token)
            texts = {
                title: " ".join(tokenizer.decode(tokens, skip_special_tokens=True).split())
                for title, tokens in parts.items()
            }
            out.append({title: text for title, text in texts.items() if text})
    return out


def _interval(value: Any) -> list[float]:
    return [round(value.estimate, 4), round(value.low, 4), round(value.high, 4)]


def score_texts(
    given: FindingsGiven,
    texts: Sequence[dict[str, str]],
    *,
    n_resamples: int = 1000,
    seed: int = 12345,
) -> dict[str, Any]:
    """The figures of the module docstring for one system's texts (section title -> text)."""
    full = [" ".join(t.values()) for t in texts]
    labeler = get_labeler("es")
    said = [labeler.label(text, sections=False) for text in full]
    prompts = [given.prompt(i) for i in range(len(texts))]
    patients = [r.patient_id for r in given.records]
    resampler = Resampler(
        len(texts), groups=patients if all(patients) else None, n_resamples=n_resamples, seed=seed
    )
    from engine.writers.check import contradictions

    replaced = np.array(
        [bool(contradictions(text, given.coded(i))) for i, text in enumerate(full)], dtype=float
    )

    def clinical(idx: np.ndarray) -> dict[str, float]:
        scores = clinical_scores([prompts[i] for i in idx], [said[i] for i in idx], given.keys)
        return {
            "micro_f1": scores.micro.f1,
            "macro_f1": scores.macro_f1,
            "check_replaced": float(replaced[idx].mean()),
        }

    figures = bootstrap_ci(clinical, resampler)
    with_ref = [i for i, ref in enumerate(given.references) if ref]
    corpus = NLGCorpus(
        [given.references[i] for i in with_ref],
        [texts[i].get("Hallazgos", "") for i in with_ref],
        lang="es",
        tokenizer="r2gen",
        meteor=False,
    )
    nlg_resampler = Resampler(
        len(with_ref),
        groups=[patients[i] for i in with_ref] if all(patients) else None,
        n_resamples=n_resamples,
        seed=seed,
    )
    nlg = nlg_intervals(corpus, nlg_resampler)
    per_finding = clinical_scores(prompts, said, given.keys).per_finding
    return {
        "n": len(texts),
        "distinct": len(set(full)),
        "micro_f1": _interval(figures["micro_f1"]),
        "macro_f1": _interval(figures["macro_f1"]),
        "check_replaced": _interval(figures["check_replaced"]),
        "bleu4": _interval(nlg["BLEU-4"]),
        "cider": _interval(nlg["CIDEr"]),
        "n_references": len(with_ref),
        "f1_per_finding": {k: round(v.f1, 4) for k, v in per_finding.items()},
    }


def baseline_texts(given: FindingsGiven) -> dict[str, list[dict[str, str]]]:
    """A constant normal report and the structured writer's text from the same findings."""
    from engine.writers.structured import write_structured
    from training.evaluate import NORMAL_REPORT

    constant = [{"Hallazgos": NORMAL_REPORT["es"]} for _ in given.records]
    structured = [
        dict(write_structured(given.coded(i))) for i in range(len(given.records))
    ]
    return {"constant_normal": constant, "structured": structured}


def checked_texts(
    given: FindingsGiven,
    texts: Sequence[dict[str, str]],
    fallback: Sequence[dict[str, str]],
) -> list[dict[str, str]]:
    """What the engine would show with the neural writer: each text the runtime's check
    finds contradicting its prompt is replaced by ``fallback``'s (the structured report)."""
    from engine.writers.check import contradictions

    return [
        dict(fallback[i]) if contradictions(" ".join(t.values()), given.coded(i)) else dict(t)
        for i, t in enumerate(texts)
    ]


def load_checkpoint_model(path: Path) -> tuple[CXRReportModel, Any]:
    """The model and tokenizer of a ``training train`` checkpoint."""
    from tokenizers import Tokenizer

    from training.models.registry import create_model

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = create_model(state["model_name"], **state["model_config"])
    assert isinstance(model, CXRReportModel)
    model.load_state_dict(state["state_dict"])
    return model, Tokenizer.from_str(state["tokenizer"])
