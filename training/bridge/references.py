"""Spanish references for datasets that only have English reports (``evaluate --lang es``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from training.bridge.bridge import spanish_target
from training.data.records import StudyRecord

logger = logging.getLogger(__name__)


def with_spanish_references(records: Sequence[StudyRecord]) -> list[StudyRecord]:
    """``records`` with Spanish sections derived by the bridge where a record has English
    sections and no Spanish ones; each section is bridged on its own, unparseable sentences
    dropped. Held in memory only: the IU X-Ray licence forbids publishing the translation."""
    out = []
    derived = 0
    for record in records:
        english = record.sections.get("en", {})
        if record.sections.get("es") or not english:
            out.append(record)
            continue
        spanish = {}
        for name, text in english.items():
            target = spanish_target(text)
            if target:
                spanish[name] = target
        if spanish:
            derived += 1
            out.append(replace(record, sections={**record.sections, "es": spanish}))
        else:
            out.append(record)
    if derived:
        logger.info("Spanish references derived by the bridge for %d studies", derived)
    return out
