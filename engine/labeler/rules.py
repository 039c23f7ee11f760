"""The shape of a language's labeling rules, and their compilation to regular expressions.

A rule table (:mod:`engine.labeler.rules_en`, :mod:`engine.labeler.rules_es`) is plain
data: regular expressions written on folded text (lower case, no accents; see
:func:`engine.labeler.text.fold`), word boundaries added here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LanguageRules:
    """Everything the labeler needs to know about one language.

    - ``mentions``: finding key -> phrases that name the finding.
    - ``indirect``: finding key -> phrases that point at the finding through a sign without
      naming it ("blunting of the costophrenic angle" for an effusion, "nodular densities" for
      a nodule). They decide only when the report never names the finding: "Blunting ...
      represents scarring. No pleural effusion." is no effusion.
    - ``normal``: finding key -> phrases that state the finding is absent without a negation
      word ("heart size is normal").
    - ``exclude``: finding key (or ``"*"`` for all) -> phrases that, where they overlap a
      mention, cancel it ("pericardial effusion" is not a pleural effusion).
    - ``negation_pre`` / ``negation_post``: triggers before / after a mention.
    - ``uncertain_pre`` / ``uncertain_post``: the same for uncertainty.
    - ``pseudo``: phrases that contain a trigger word but are not triggers ("no change").
    - ``terminators``: words that end a trigger's scope ("but", "pero").
    - ``alternatives``: words that join two findings as alternatives ("atelectasis or
      scarring"): a finding offered as one of two is uncertain, unless negated ("no effusion
      or pneumothorax" stays absent).
    - ``evidential``: uncertainty triggers that pass an earlier negation on: "no focal opacity
      to suggest pneumonia" denies pneumonia, where "opacity suggesting pneumonia" hedges it.
    - ``probable``: the uncertainty triggers (whole trigger text) that hedge only how something
      the radiologist sees is read, not whether it is there: a probable or favoured reading
      ("probable pneumonia", "likely atelectasis"), a borderline degree ("borderline heart
      size") and the named differential of a seen abnormality ("atelectasis versus
      infiltrate"; "atelectasis or scarring" is always this kind). Every other uncertainty
      trigger raises a possibility ("may represent", "possibly", "cannot exclude"). See
      :data:`engine.labeler.labeler.Certainty`.
    - ``pre_window`` / ``post_window``: how many words a trigger reaches.
    """

    lang: str
    mentions: dict[str, tuple[str, ...]]
    normal: dict[str, tuple[str, ...]]
    exclude: dict[str, tuple[str, ...]]
    negation_pre: tuple[str, ...]
    negation_post: tuple[str, ...]
    uncertain_pre: tuple[str, ...]
    uncertain_post: tuple[str, ...]
    pseudo: tuple[str, ...]
    terminators: tuple[str, ...]
    indirect: dict[str, tuple[str, ...]] = field(default_factory=dict)
    alternatives: tuple[str, ...] = ()
    evidential: tuple[str, ...] = ()
    probable: tuple[str, ...] = ()
    pre_window: int = 12
    post_window: int = 6
    compiled: CompiledRules | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # The keys are checked against training's finding set by a test: the engine knows the
        # finding set only from an artifact's manifest, so it cannot check them here.
        object.__setattr__(self, "compiled", CompiledRules.build(self))


def _alt(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    # Longest first so that alternation prefers "no evidence of" over "no".
    ordered = sorted(patterns, key=len, reverse=True)
    return re.compile(r"(?<![\w])(?:" + "|".join(f"(?:{p})" for p in ordered) + r")(?![\w])")


def _alt_punct(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """Like :func:`_alt` but lets a pattern begin or end with punctuation (",", "?")."""
    if not patterns:
        return None
    ordered = sorted(patterns, key=len, reverse=True)
    parts = []
    for p in ordered:
        left = "" if not p[:1].isalnum() else r"(?<![\w])"
        right = "" if not p[-1:].isalnum() and not p.endswith(("*", "+", ")", "?")) else r"(?![\w])"
        parts.append(f"{left}(?:{p}){right}")
    return re.compile("|".join(parts))


@dataclass(frozen=True)
class CompiledRules:
    """The rule table as compiled regular expressions."""

    mentions: dict[str, re.Pattern[str]]
    indirect: dict[str, re.Pattern[str]]
    normal: dict[str, re.Pattern[str]]
    exclude: dict[str, re.Pattern[str]]
    negation_pre: re.Pattern[str] | None
    negation_post: re.Pattern[str] | None
    uncertain_pre: re.Pattern[str] | None
    uncertain_post: re.Pattern[str] | None
    pseudo: re.Pattern[str] | None
    terminators: re.Pattern[str] | None
    alternatives: re.Pattern[str] | None
    evidential: re.Pattern[str] | None
    probable: re.Pattern[str] | None

    @classmethod
    def build(cls, rules: LanguageRules) -> CompiledRules:
        def table(t: dict[str, tuple[str, ...]]) -> dict[str, re.Pattern[str]]:
            out = {}
            for key, pats in t.items():
                pattern = _alt(pats)
                if pattern is not None:
                    out[key] = pattern
            return out

        return cls(
            mentions=table(rules.mentions),
            indirect=table(rules.indirect),
            normal=table(rules.normal),
            exclude=table(rules.exclude),
            negation_pre=_alt(rules.negation_pre),
            negation_post=_alt(rules.negation_post),
            uncertain_pre=_alt_punct(rules.uncertain_pre),
            uncertain_post=_alt_punct(rules.uncertain_post),
            pseudo=_alt(rules.pseudo),
            terminators=_alt_punct(rules.terminators),
            alternatives=_alt(rules.alternatives),
            evidential=_alt(rules.evidential),
            probable=_alt_punct(rules.probable),
        )
