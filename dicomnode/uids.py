"""Deterministic UIDs for the objects the node writes.

A retried delivery must never create a second, different report: the PACS would
show two drafts for one study. So every output UID is a pure function of the
inputs (study, source images), the engine (its sha256) and the kind of object,
hashed under a UID root with :func:`pydicom.uid.generate_uid` (SHA-512 of the
entropy sources, truncated to the 64-character limit).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

from dicomnode.exceptions import InvalidUIDError

logger = logging.getLogger(__name__)

#: Used when the site has no UID root of its own (pydicom's registered root).
DEFAULT_UID_ROOT = PYDICOM_ROOT_UID

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_ROOT_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.$")
# generate_uid needs room for a useful hash after the root.
_MAX_ROOT_LEN = 32


def is_valid_uid(uid: str) -> bool:
    """Whether ``uid`` is a valid DICOM UID (PS3.5 9.1: digits and dots, no leading zeros)."""
    return isinstance(uid, str) and 0 < len(uid) <= 64 and bool(_UID_RE.match(uid))


def validate_uid(uid: object, *, name: str = "uid") -> str:
    """Return ``uid`` (without DICOM padding), or raise :class:`InvalidUIDError` naming ``name``."""
    if uid is None or uid == "":
        raise InvalidUIDError(f"{name} is missing; fix the sender or the input.")
    if isinstance(uid, str):
        uid = uid.rstrip("\x00 ")
    if not isinstance(uid, str) or not is_valid_uid(uid):
        raise InvalidUIDError(
            f"{name} {uid!r} is not a valid DICOM UID (digits and dots, at most 64 "
            "characters, no leading zeros in a component); fix the sender or the input."
        )
    return str(uid)


def validate_uid_root(root: str) -> str:
    """Return ``root`` if it can prefix derived UIDs (ends with a dot, at most 32 characters)."""
    if not isinstance(root, str) or not _ROOT_RE.match(root) or len(root) > _MAX_ROOT_LEN:
        raise ValueError(
            f"root {root!r} is not a usable UID root: it must be a valid UID followed by a "
            f"'.', at most {_MAX_ROOT_LEN} characters long"
        )
    return root


def derive_uid(*parts: str, root: str = DEFAULT_UID_ROOT) -> str:
    """A UID under ``root`` that depends only on ``parts`` (in order).

    Parts are joined with a separator that cannot occur in UIDs or hex digests, so
    ``("1.2", "3")`` and ``("1", "2.3")`` give different UIDs.
    """
    validate_uid_root(root)
    if not parts:
        raise ValueError("parts must hold at least one string to derive a UID from")
    for i, part in enumerate(parts):
        if not isinstance(part, str) or not part:
            raise TypeError(f"parts[{i}] must be a non-empty str, got {part!r}")
    uid = str(generate_uid(prefix=root, entropy_srcs=["\x1f".join(parts)]))
    return validate_uid(uid, name="derived UID")


def derive_output_uid(
    study_instance_uid: str,
    source_sop_instance_uids: Iterable[str],
    engine_sha256: str,
    kind: str,
    *,
    root: str = DEFAULT_UID_ROOT,
) -> str:
    """The UID of one output object (or series) for one study, engine and ``kind``.

    The source UIDs are sorted and de-duplicated so that the order in which the
    PACS sent the images does not matter.
    """
    validate_uid(study_instance_uid, name="study_instance_uid")
    sources = sorted(set(source_sop_instance_uids))
    if not sources:
        raise ValueError("source_sop_instance_uids must name at least one image")
    for uid in sources:
        validate_uid(uid, name="source SOP Instance UID")
    if not engine_sha256:
        raise ValueError("engine_sha256 must not be empty")
    if not kind:
        raise ValueError("kind must not be empty")
    return derive_uid(study_instance_uid, ",".join(sources), engine_sha256, kind, root=root)
