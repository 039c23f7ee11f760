"""Text folding shared by the labeler: lower case, accents removed, length preserved.

Keeping the folded text exactly as long as the original lets a match found on the folded
text point back at the original words.
"""

from __future__ import annotations

import logging
import unicodedata

logger = logging.getLogger(__name__)


def _fold_char(ch: str) -> str:
    base = unicodedata.normalize("NFD", ch)[0].lower()
    # lower() of a few characters is longer than one ("İ"); keep the length at one.
    return base if len(base) == 1 else ch


def nfc(text: str) -> str:
    """``text`` in Unicode NFC, so that every accented letter is one character."""
    return unicodedata.normalize("NFC", text)


def fold(text: str) -> str:
    """``text`` in lower case without accents (``"Neumotórax"`` -> ``"neumotorax"``).

    The result has exactly as many characters as ``nfc(text)``.
    """
    return "".join(_fold_char(ch) for ch in nfc(text))
