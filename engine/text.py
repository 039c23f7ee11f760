"""Decoded token ids to the report's Spanish sections, with the artifact's tokenizer."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence

from engine.artifact import EngineArtifact
from engine.exceptions import ArtifactError

logger = logging.getLogger(__name__)

DEFAULT_SECTION = "Hallazgos"
#: Where each section title goes in the report, whatever order the decoder wrote it in.
READING_ORDER = {"Hallazgos": 0, "Impresión": 1}


class ReportTokenizer:
    """The artifact's ``tokenizer.json`` plus the section tokens named in the manifest."""

    def __init__(self, artifact: EngineArtifact) -> None:
        from tokenizers import Tokenizer

        spec = artifact.manifest.tokenizer
        path = artifact.path(spec.file)
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ArtifactError(
                f"{path}: not a valid tokenizers file ({exc}); re-export the engine",
                path=spec.file,
            ) from exc
        size = self._tokenizer.get_vocab_size()
        if size > artifact.manifest.decoder.vocab_size:
            raise ArtifactError(
                f"{path}: {size} tokens but the decoder has {artifact.manifest.decoder.vocab_size}"
                "; the tokenizer does not belong to this model, re-export the engine",
                path=spec.file,
            )
        self._section_by_id: dict[int, str] = {v: k for k, v in spec.section_tokens.items()}

    def decode(self, ids: Sequence[int]) -> str:
        text = self._tokenizer.decode(list(ids), skip_special_tokens=True)
        return unicodedata.normalize("NFC", " ".join(text.split()))

    def sections(self, ids: Sequence[int]) -> tuple[tuple[str, str], ...]:
        """Split at section tokens; text before the first goes to "Hallazgos". Empty dropped.
        Returned in reading order ("Hallazgos" before "Impresión"), whatever order the
        decoder wrote them in."""
        parts: list[tuple[str, list[int]]] = [(DEFAULT_SECTION, [])]
        for token in ids:
            if token in self._section_by_id:
                parts.append((self._section_by_id[token], []))
            else:
                parts[-1][1].append(token)
        merged: dict[str, str] = {}
        for title, chunk in parts:
            text = self.decode(chunk)
            if text:
                merged[title] = f"{merged[title]} {text}" if title in merged else text
        return tuple(sorted(merged.items(), key=lambda item: READING_ORDER.get(item[0], 99)))
