"""The rule-based findings labeler for English and Spanish chest radiograph reports."""

from engine.labeler.labeler import (
    Certainty,
    FindingsLabeler,
    Mention,
    get_labeler,
    label_report,
)
from engine.labeler.sections import labeled_text, split_sections

__all__ = [
    "Certainty",
    "FindingsLabeler",
    "Mention",
    "get_labeler",
    "label_report",
    "labeled_text",
    "split_sections",
]
