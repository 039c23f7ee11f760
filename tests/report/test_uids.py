"""Deterministic output UIDs (dicomnode.uids)."""

from __future__ import annotations

import pytest

from dicomnode.exceptions import InvalidUIDError
from dicomnode.uids import (
    DEFAULT_UID_ROOT,
    derive_output_uid,
    derive_uid,
    is_valid_uid,
    validate_uid,
    validate_uid_root,
)

STUDY = "1.3.6.1.4.1.5962.1.2.9.20040826185059.5457"
SOURCES = ["1.3.6.1.4.1.5962.1.1.9.1.1.20040826185059.5457", "1.3.6.1.4.1.5962.1.1.9.1.2.2004"]


def test_derived_uid_is_stable_valid_and_under_the_root() -> None:
    uid = derive_uid("a", "b")
    assert uid == derive_uid("a", "b")
    assert uid.startswith(DEFAULT_UID_ROOT) and is_valid_uid(uid) and len(uid) <= 64
    assert derive_uid("a", "b", root="1.2.3.").startswith("1.2.3.")
    assert derive_uid("a", "b", root="1.2.3.") != uid


def test_parts_are_not_ambiguous() -> None:
    assert derive_uid("1.2", "3") != derive_uid("1", "2.3")
    assert derive_uid("ab") != derive_uid("a", "b")


def test_output_uid_ignores_source_order_and_duplicates() -> None:
    uid = derive_output_uid(STUDY, SOURCES, "ab" * 32, "sr:tid2000")
    assert uid == derive_output_uid(
        STUDY, [*reversed(SOURCES), SOURCES[0]], "ab" * 32, "sr:tid2000"
    )
    assert uid != derive_output_uid(STUDY, SOURCES, "cd" * 32, "sr:tid2000")
    assert uid != derive_output_uid(STUDY, SOURCES, "ab" * 32, "sr:tid1500")
    assert uid != derive_output_uid(STUDY, SOURCES[:1], "ab" * 32, "sr:tid2000")


@pytest.mark.parametrize("bad", ["", "1.02.3", "1..2", "1.2.", "a.b", "1." + "2" * 70])
def test_invalid_uids_are_refused(bad: str) -> None:
    assert not is_valid_uid(bad)
    with pytest.raises(InvalidUIDError, match="study_instance_uid"):
        validate_uid(bad, name="study_instance_uid")
    with pytest.raises(InvalidUIDError):
        derive_output_uid(bad or "x", SOURCES, "ab" * 32, "k")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="root"):
        validate_uid_root("1.2.3")
    with pytest.raises(ValueError, match="root"):
        validate_uid_root("1." + "2" * 40 + ".")
    with pytest.raises(ValueError, match="parts"):
        derive_uid()
    with pytest.raises(TypeError, match=r"parts\[1\]"):
        derive_uid("a", "")
    with pytest.raises(ValueError, match="source"):
        derive_output_uid(STUDY, [], "ab" * 32, "k")
    with pytest.raises(ValueError, match="engine_sha256"):
        derive_output_uid(STUDY, SOURCES, "", "k")
