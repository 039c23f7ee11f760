"""The cross-lingual bridge: English training reports -> Spanish training targets.

Each English sentence is parsed into what it states (:mod:`training.bridge.parse_en`) and
realised in Spanish with :mod:`engine.language`. Sentences that cannot be parsed are reported
and dropped; nothing English is passed through. Targets are derived on the fly: the IU X-Ray
licence forbids publishing translated copies, so nothing translated is written into the
repository.
"""

from training.bridge.bridge import (
    BridgedReport,
    BridgedSentence,
    bridge_report,
    spanish_reference,
    spanish_target,
)
from training.bridge.parse_en import ParsedSentence, parse_sentence
from training.bridge.references import with_spanish_references

__all__ = [
    "BridgedReport",
    "BridgedSentence",
    "ParsedSentence",
    "bridge_report",
    "parse_sentence",
    "spanish_reference",
    "spanish_target",
    "with_spanish_references",
]
