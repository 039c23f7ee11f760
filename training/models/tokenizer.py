"""Report tokenizer: byte-pair encoding trained locally with Hugging Face ``tokenizers``.

A report is encoded as ``[BOS] [HALLAZGOS] findings… [IMPRESION] impression… [EOS]`` (a
section's token only when the section has text); export names the section tokens in the
manifest (``tokenizer.section_tokens``) and the runtime splits the decoded text at them into
"Hallazgos" and "Impresión". Text before any section token reads as "Hallazgos", so engines
trained before impressions were kept apart still load and report.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

logger = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
FINDINGS_SECTION, IMPRESSION_SECTION = "[HALLAZGOS]", "[IMPRESION]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK, FINDINGS_SECTION, IMPRESSION_SECTION)
#: Characters every tokenizer can encode, whatever its training texts held: a report the
#: decoder is taught or scored on never loses a capital or an accented letter to [UNK].
ALPHABET: tuple[str, ...] = tuple(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "áéíóúüñÁÉÍÓÚÜÑ0123456789.,;:()-/%'\"¿?¡!<>=+ºª°"
)
#: Section title shown to the reader -> the special token opening that section.
SECTION_TOKENS: dict[str, str] = {"Hallazgos": FINDINGS_SECTION, "Impresión": IMPRESSION_SECTION}


def train_report_tokenizer(texts: Iterable[str], vocab_size: int = 4000) -> Tokenizer:
    """Train a BPE tokenizer on Spanish report text (NFC, case and accents kept)."""
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.NFC()
    # Punctuation splits off "." and ","; Metaspace keeps word boundaries so decoding
    # reproduces "derrame pleural." with the right spacing.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()]
    )
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(ALPHABET),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    logger.info("report tokenizer trained: %d tokens", tokenizer.get_vocab_size())
    return tokenizer


def encode_report(tokenizer: Tokenizer, findings: str, impression: str = "") -> list[int]:
    """Token ids of one report in the decoder's training layout."""
    ids = [token_id(tokenizer, BOS)]
    if findings or not impression:
        ids.append(token_id(tokenizer, FINDINGS_SECTION))
        ids += tokenizer.encode(findings).ids
    if impression:
        ids.append(token_id(tokenizer, IMPRESSION_SECTION))
        ids += tokenizer.encode(impression).ids
    ids.append(token_id(tokenizer, EOS))
    return ids


def token_id(tokenizer: Tokenizer, token: str) -> int:
    value = tokenizer.token_to_id(token)
    if value is None:
        raise ValueError(f"tokenizer has no {token!r}; train it with train_report_tokenizer")
    return int(value)
