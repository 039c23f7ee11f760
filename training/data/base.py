"""What every dataset adapter shares: the sequence interface, file checks, CSV reading, splits."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, overload

from training.data.records import StudyRecord, normalize_split
from training.exceptions import DatasetFileNotFoundError, DatasetFormatError

logger = logging.getLogger(__name__)

class ChestXrayDataset(Sequence[StudyRecord]):
    """A dataset read from its published layout, as a sequence of :class:`StudyRecord`.

    Subclasses set :attr:`name` and implement :meth:`_load`; ``split`` keeps one split only.
    ``label_reports=True`` fills the findings of studies that have none from their report text
    with :mod:`engine.labeler` (for layouts that ship no labels, e.g. R2Gen IU X-Ray).
    """

    name: ClassVar[str] = ""

    def __init__(
        self, root: str | Path, split: str | None = None, *, label_reports: bool = False
    ) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise DatasetFileNotFoundError(
                self.root, f"Pass the folder that holds the {self.name or 'dataset'} files."
            )
        self.split = normalize_split(split) if split is not None else None
        records = self._load()
        if self.split is not None:
            records = [r for r in records if r.split == self.split]
        if label_reports:
            records = [label_from_report(r) for r in records]
        self.records: list[StudyRecord] = records
        logger.info("%s: %d studies from %s (split=%s)", self.name, len(records), root, split)

    def _load(self) -> list[StudyRecord]:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> StudyRecord: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[StudyRecord]: ...

    def __getitem__(self, index: int | slice) -> StudyRecord | Sequence[StudyRecord]:
        return self.records[index]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[StudyRecord]:
        return iter(self.records)

    def by_id(self) -> dict[str, StudyRecord]:
        """The records keyed by study id."""
        return {r.study_id: r for r in self.records}

def label_from_report(record: StudyRecord) -> StudyRecord:
    """``record`` with findings from its report text when it has none (English first)."""
    if record.findings:
        return record
    from engine.labeler import get_labeler  # the labeler imports records; import late

    for lang in ("en", "es"):
        text = record.report(lang)
        if text:
            findings = get_labeler(lang).label(text, sections=False)
            meta = {**record.meta, "findings_source": f"labeler:{lang}"}
            return replace(record, findings=findings, meta=meta)
    return record


def find_file(root: Path, names: Sequence[str], fix: str) -> Path:
    """The first of ``names`` (relative to ``root``) that exists; else an error naming them."""
    for name in names:
        candidate = root / name
        if candidate.exists():
            return candidate
    raise DatasetFileNotFoundError(root / names[0], fix)

def open_text(path: Path) -> io.TextIOBase:
    """A text stream of ``path``, transparently gunzipped when it ends with ``.gz``."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")

def read_csv(path: Path, required: Sequence[str], fix: str) -> list[dict[str, str]]:
    """All rows of a CSV file (``.csv`` or ``.csv.gz``), after checking its header.

    Raises :class:`DatasetFormatError` naming the missing columns when the header lacks any of
    ``required``.
    """
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DatasetFormatError(path, f"missing column(s) {missing}; found {header[:12]}", fix)
        return list(reader)

def hashed_split(group: str, val: float = 0.1, test: float = 0.2) -> str:
    """A stable split for a patient (or study) id, for datasets that publish none.

    Hashing the id keeps every study of one patient in the same split, and gives the same
    answer on every machine and Python version.
    """
    digest = hashlib.sha256(group.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"
