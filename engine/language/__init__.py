"""The Spanish of chest radiography: vocabulary with gender and number, and a grammar that
realises what a report states (:class:`Statement`) as a radiologist writes it."""

from engine.language.grammar import noun_phrase, realise, realise_negatives, realise_one, sentence
from engine.language.statement import NORMALS, ZONES, Location, Statement

__all__ = [
    "NORMALS",
    "ZONES",
    "Location",
    "Statement",
    "noun_phrase",
    "realise",
    "realise_negatives",
    "realise_one",
    "sentence",
]
