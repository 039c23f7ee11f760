"""The rule-based findings labeler: report text in, finding key -> present/absent/uncertain out.

How one report is read:

1. Keep the sections that describe the image (FINDINGS, IMPRESSION; the whole text when it has
   no headers), see :func:`engine.labeler.sections.labeled_text`.
2. Split it into sentences; fold each (lower case, no accents).
3. Find the triggers of the sentence (negation and uncertainty, before or after a mention;
   pseudo-triggers such as "no change"; scope terminators such as "but"). Where triggers
   overlap, the longest wins, so "no se descarta" is uncertainty, not negation.
4. Find the mentions of each finding, minus those an exclusion cancels ("pericardial effusion").
   Phrases that state normality ("heart size is normal") are mentions that are absent.
5. A mention takes the nearest trigger before it (within ``pre_window`` words, no terminator in
   between) and the nearest after it (within ``post_window`` words): uncertain if either is an
   uncertainty trigger, absent if either negates, present otherwise. An evidential uncertainty
   trigger after a negation passes the negation on: "no opacity to suggest pneumonia" is absent.
6. Two findings offered as alternatives ("atelectasis or scarring") are each uncertain, unless
   negated ("no effusion or pneumothorax").
7. Per finding, over the whole report: when the report names the finding, only the mentions that
   name it count (an indirect sign such as "blunting of the costophrenic angle" does not outvote
   "No pleural effusion"); otherwise the signs count. Then present if any counted mention is
   present, else uncertain if any is, else absent. A finding never mentioned is not in the
   output.
8. ``no_finding`` (as in CheXpert) is present when the text says something and no finding other
   than support devices is present or uncertain.

:meth:`FindingsLabeler.grade` gives the same reading with the uncertainty graded
(:data:`Certainty`); :meth:`FindingsLabeler.label` is that reading with both grades uncertain.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from engine.labeler.rules import CompiledRules, LanguageRules
from engine.labeler.rules_en import RULES_EN
from engine.labeler.rules_es import RULES_ES
from engine.labeler.sections import labeled_text
from engine.labeler.text import fold, nfc
from engine.result import Presence

logger = logging.getLogger(__name__)

RULES: dict[str, LanguageRules] = {"en": RULES_EN, "es": RULES_ES}

#: How sure a report is of a finding. ``probable`` and ``possible`` are the two kinds of
#: uncertain: "probable" when the report hedges only how something it sees is read (a probable
#: or favoured reading, a borderline degree, "atelectasis or scarring", "A versus B"; the
#: rules' ``probable`` triggers), "possible" when it raises the finding as a possibility ("may
#: represent", "possibly", "cannot exclude"). The hedging lexicons of radiology draw the same
#: line between "probably"/"likely" and "possibly"/"may".
Certainty = Literal["present", "probable", "possible", "absent"]
CERTAINTY_VALUES: tuple[str, ...] = ("present", "probable", "possible", "absent")

#: Findings that do not make a study abnormal for ``no_finding`` (as in CheXpert).
NOT_ABNORMAL: frozenset[str] = frozenset({"no_finding", "support_devices"})

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+|(?<=[a-z]\.)(?=[A-Z])")
_WORD = re.compile(r"\w+")
_RANK: dict[str, int] = {"absent": 0, "possible": 1, "probable": 2, "present": 3}
_PRESENCE: dict[str, Presence] = {
    "present": "present", "probable": "uncertain", "possible": "uncertain", "absent": "absent"}


@dataclass(frozen=True)
class Mention:
    """One place a report speaks of a finding, and what it says about it."""

    finding: str
    #: What the report says of the finding, uncertainty graded (see :data:`Certainty`).
    certainty: Certainty
    text: str
    sentence: str
    trigger: str | None = None
    #: False for an indirect sign of the finding (see :class:`LanguageRules` ``indirect``).
    direct: bool = True

    @property
    def presence(self) -> Presence:
        """:attr:`certainty` with both grades of uncertainty as ``uncertain``."""
        return _PRESENCE[self.certainty]


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    kinds: frozenset[str]
    text: str


def _words(text: str) -> int:
    return len(_WORD.findall(text))


class FindingsLabeler:
    """Label chest radiograph reports in one language (``"en"`` or ``"es"``)."""

    def __init__(self, lang: str = "en", rules: LanguageRules | None = None) -> None:
        if rules is None:
            if lang not in RULES:
                raise ValueError(f"lang must be one of {sorted(RULES)}, got {lang!r}")
            rules = RULES[lang]
        self.lang = lang
        self.rules = rules
        assert rules.compiled is not None  # built in LanguageRules.__post_init__
        self._c: CompiledRules = rules.compiled
        # What may stand between two findings offered as alternatives: the joining word (or a
        # slash: "collapse/consolidation"), and up to three words that qualify the second
        # finding ("atelectasis or focal scarring").
        alt = self._c.alternatives
        self._alt_link: re.Pattern[str] | None = (
            re.compile(rf"[\s,]*(?:(?:{alt.pattern})\s+|/\s*)(?:[\w-]+\s+){{0,3}}")
            if alt else None
        )
        self._list_link = re.compile(r"\s*,\s*(?:[\w-]+\s+){0,3}")

    # -- public API -------------------------------------------------------------------------
    def label(self, report: str, *, sections: bool = True) -> dict[str, Presence]:
        """The findings of ``report``; ``sections=False`` reads the whole text."""
        return {k: _PRESENCE[c] for k, c in self.grade(report, sections=sections).items()}

    def grade(self, report: str, *, sections: bool = True) -> dict[str, Certainty]:
        """:meth:`label` with the uncertainty graded: ``probable`` or ``possible`` where
        :meth:`label` says ``uncertain`` (see :data:`Certainty`)."""
        text = labeled_text(report, self.lang) if sections else report
        mentions = self._mentions(text)
        named = {m.finding for m in mentions if m.direct}
        found: dict[str, Certainty] = {}
        for mention in mentions:
            if not mention.direct and mention.finding in named:
                continue
            old = found.get(mention.finding)
            if old is None or _RANK[mention.certainty] > _RANK[old]:
                found[mention.finding] = mention.certainty
        abnormal = any(c != "absent" for k, c in found.items() if k not in NOT_ABNORMAL)
        if not abnormal and text.strip():
            found["no_finding"] = "present"
        return found

    def readable_findings(self) -> frozenset[str]:
        """The findings this language's rules can name (mentions or normal statements)."""
        return frozenset(self.rules.mentions) | frozenset(self.rules.normal)

    def label_many(self, reports: Iterable[str]) -> list[dict[str, Presence]]:
        """:meth:`label` for each report."""
        return [self.label(r) for r in reports]

    def mentions(self, report: str, *, sections: bool = True) -> list[Mention]:
        """Every mention found, with the trigger that decided it: for reading and debugging."""
        return self._mentions(labeled_text(report, self.lang) if sections else report)

    def sentences(self, text: str) -> list[str]:
        """``text`` cut into sentences."""
        return [s.strip() for s in _SENTENCE_END.split(nfc(text)) if s and s.strip()]

    # -- internals --------------------------------------------------------------------------
    def _mentions(self, text: str) -> list[Mention]:
        out: list[Mention] = []
        for sentence in self.sentences(text):
            out.extend(self._sentence_mentions(sentence))
        return out

    def _triggers(self, folded: str) -> list[_Span]:
        c = self._c
        raw: list[tuple[int, int, str]] = []
        for kind, pattern in (
            ("neg_pre", c.negation_pre),
            ("neg_post", c.negation_post),
            ("unc_pre", c.uncertain_pre),
            ("unc_post", c.uncertain_post),
            ("pseudo", c.pseudo),
            ("term", c.terminators),
        ):
            if pattern is None:
                continue
            for m in pattern.finditer(folded):
                if m.end() > m.start():
                    raw.append((m.start(), m.end(), kind))
        by_extent: dict[tuple[int, int], set[str]] = {}
        for start, end, kind in raw:
            by_extent.setdefault((start, end), set()).add(kind)
        accepted: list[_Span] = []
        for (start, end), kinds in sorted(by_extent.items(), key=lambda kv: kv[0][0] - kv[0][1]):
            if any(start < s.end and s.start < end for s in accepted):
                continue
            accepted.append(_Span(start, end, frozenset(kinds), folded[start:end]))
        return sorted(accepted, key=lambda s: s.start)

    def _sentence_mentions(self, sentence: str) -> list[Mention]:
        folded = fold(sentence)
        triggers = self._triggers(folded)
        c = self._c
        # (key, start, end, kind): kind is "direct", "indirect" or "normal".
        found: list[tuple[str, int, int, str]] = []
        for kind, table in (("direct", c.mentions), ("indirect", c.indirect)):
            for key, pattern in table.items():
                excluders = [p for k, p in c.exclude.items() if k in (key, "*")]
                blocked = [(m.start(), m.end()) for p in excluders for m in p.finditer(folded)]
                if kind == "indirect":  # a sign inside a phrase that names the finding is not one
                    blocked += [(s, e) for k, s, e, _ in found if k == key]
                for m in pattern.finditer(folded):
                    if any(m.start() < e and s < m.end() for s, e in blocked):
                        continue
                    # A mention inside a trigger phrase ("no acute") is part of the trigger.
                    if any(t.start <= m.start() and m.end() <= t.end for t in triggers):
                        continue
                    found.append((key, m.start(), m.end(), kind))
        for key, pattern in c.normal.items():
            for m in pattern.finditer(folded):
                found.append((key, m.start(), m.end(), "normal"))
        out = []
        for key, start, end, kind in found:
            if kind == "normal":
                presence: Presence = "absent"
                trigger: str | None = "normal"
            else:
                presence, trigger = self._presence(folded, triggers, start, end)
            out.append(Mention(key, self._certainty(presence, trigger), sentence[start:end],
                               sentence, trigger, kind != "indirect"))
        return self._alternatives(folded, found, out)

    def _alternatives(
        self, folded: str, found: list[tuple[str, int, int, str]], mentions: list[Mention]
    ) -> list[Mention]:
        """Make present findings offered as alternatives uncertain: "A or B", and the whole
        list in "A, B, or C" (a list only with the comma before "or": without it, "opacity,
        scarring or atelectasis" offers two explanations of an opacity that is there)."""
        if self._alt_link is None or len(mentions) < 2:
            return mentions
        order = sorted(
            (i for i, f in enumerate(found) if f[3] != "normal"), key=lambda i: found[i][1]
        )
        uncertain: set[int] = set()
        for pos in range(1, len(order)):
            prev, cur = found[order[pos - 1]], found[order[pos]]
            gap = folded[prev[2] : cur[1]]
            if prev[0] == cur[0] or not self._alt_link.fullmatch(gap):
                continue
            group = [order[pos - 1], order[pos]]
            if "," in gap:  # "A, B, or C": the list before the "or" belongs to it
                back = pos - 1
                while back > 0:
                    before, after = found[order[back - 1]], found[order[back]]
                    if not self._list_link.fullmatch(folded[before[2] : after[1]]):
                        break
                    back -= 1
                    group.append(order[back])
            if len({found[i][0] for i in group}) >= 2:
                uncertain.update(group)
        out = list(mentions)
        for i in uncertain:
            m = out[i]
            if m.presence == "present":
                out[i] = Mention(m.finding, "probable", m.text, m.sentence, "alternative",
                                 m.direct)
        return out

    def _certainty(self, presence: Presence, trigger: str | None) -> Certainty:
        if presence == "present" or presence == "absent":
            return presence
        probable = self._c.probable
        if trigger is not None and probable is not None and probable.fullmatch(trigger):
            return "probable"
        return "possible"

    def _presence(
        self, folded: str, triggers: list[_Span], start: int, end: int
    ) -> tuple[Presence, str | None]:
        pre: _Span | None = None
        evidential = self._c.evidential
        for t in triggers:
            if t.end > start:
                break
            if "term" in t.kinds or "pseudo" in t.kinds:
                pre = None  # a terminator (or pseudo-trigger) closes the earlier scopes
                continue
            if t.kinds & {"neg_pre", "unc_pre"}:
                # "no opacity to suggest pneumonia": the negation reaches through "suggest".
                passes_on = (
                    pre is not None and "neg_pre" in pre.kinds and "unc_pre" in t.kinds
                    and evidential is not None and evidential.fullmatch(t.text) is not None
                )
                if passes_on:
                    assert pre is not None
                    pre = _Span(t.start, t.end, frozenset({"neg_pre"}), f"{pre.text} ... {t.text}")
                else:
                    pre = t
        if pre is not None and _words(folded[pre.end : start]) > self.rules.pre_window:
            pre = None
        post: _Span | None = None
        for t in triggers:
            if t.start < end:
                continue
            if "term" in t.kinds or "pseudo" in t.kinds:
                break
            if t.kinds & {"neg_post", "unc_post"}:
                if _words(folded[end : t.start]) <= self.rules.post_window:
                    post = t
                break
            if t.kinds & {"neg_pre", "unc_pre"}:
                break  # a trigger that looks forward opens the next mention's scope
        # A trigger inside the mention phrase ("contours are not enlarged") applies to it.
        inside = [t for t in triggers if start <= t.start and t.end <= end]
        chosen = [t for t in (pre, post, *inside) if t is not None]
        for t in chosen:
            if t.kinds & {"unc_pre", "unc_post"}:
                return "uncertain", t.text
        for t in chosen:
            if t.kinds & {"neg_pre", "neg_post"}:
                return "absent", t.text
        return "present", None


_LABELERS: dict[str, FindingsLabeler] = {}


def get_labeler(lang: str = "en") -> FindingsLabeler:
    """A shared labeler for ``lang`` (compiled once per process)."""
    if lang not in _LABELERS:
        _LABELERS[lang] = FindingsLabeler(lang)
    return _LABELERS[lang]


def label_report(report: str, lang: str = "en") -> dict[str, Presence]:
    """The findings of one report in ``lang``."""
    return get_labeler(lang).label(report)
