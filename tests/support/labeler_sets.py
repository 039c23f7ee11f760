"""Sentence sets written independently of the labeler's rules (``sentence<TAB>key=value;...``,
``#`` lines are comments): reading them and scoring the labeler on them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.labeler import get_labeler


@dataclass(frozen=True)
class SetScore:
    right: int
    total: int
    #: (sentence, finding, expected, read) for each label the labeler got wrong.
    wrong: list[tuple[str, str, str, str | None]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.right / max(self.total, 1)


def read_sentence_set(path: Path) -> list[tuple[str, dict[str, str]]]:
    cases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        sentence, expected = line.split("\t")
        cases.append((sentence, dict(item.split("=") for item in expected.split(";"))))
    return cases


def score_sentence_set(path: Path, lang: str) -> SetScore:
    """Each listed label against ``label(sentence, sections=False)``; ``none`` means the
    labeler must not mention the finding."""
    labeler = get_labeler(lang)
    right = total = 0
    wrong: list[tuple[str, str, str, str | None]] = []
    for sentence, expected in read_sentence_set(path):
        got = labeler.label(sentence, sections=False)
        for key, value in expected.items():
            total += 1
            if got.get(key) == (None if value == "none" else value):
                right += 1
            else:
                wrong.append((sentence, key, value, got.get(key)))
    return SetScore(right, total, wrong)
