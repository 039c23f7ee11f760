"""Artifact round trip, and refusal of corrupt, incomplete or incompatible artifacts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from engine.artifact import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    EngineArtifact,
    load_artifact,
    pack_artifact,
    write_manifest,
)
from engine.backends import create_backend
from engine.exceptions import (
    ArtifactError,
    ArtifactNotFoundError,
    ChecksumMismatchError,
    IncompatibleArtifactError,
    ManifestError,
)
from engine.runtime import create_engine
from training.findings import FINDINGS


@pytest.fixture
def artifact_copy(tiny_artifact_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(tiny_artifact_dir, tmp_path / "engine"))


def _edit_manifest(root: Path, **changes: object) -> None:
    path = root / MANIFEST_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_round_trip_identity_and_finding_set(tiny_artifact_dir: Path) -> None:
    artifact = load_artifact(tiny_artifact_dir)
    raw = (tiny_artifact_dir / MANIFEST_NAME).read_bytes()
    assert artifact.identity.sha256 == hashlib.sha256(raw).hexdigest()
    assert artifact.identity.name == "cxr-tiny-random"
    assert artifact.manifest.format_version == FORMAT_VERSION
    assert artifact.manifest.purpose == "test"
    # The finding set comes from training.findings, in model output order, with Spanish names.
    assert [f.key for f in artifact.manifest.findings] == [f.key for f in FINDINGS]
    by_key = {f.key: f for f in FINDINGS}
    for spec in artifact.manifest.findings:
        assert spec.name_es == by_key[spec.key].name_es
        assert spec.code_value == by_key[spec.key].code_value
        assert spec.locatable == by_key[spec.key].locatable
    assert {"Hallazgos", "Impresión"} == set(artifact.manifest.tokenizer.section_tokens)
    # Every file on disk but the manifest is listed with its checksum.
    on_disk = {p.name for p in tiny_artifact_dir.iterdir() if p.name != MANIFEST_NAME}
    assert on_disk == set(artifact.manifest.files)
    for diff in artifact.manifest.export.max_abs_diff.values():
        assert diff <= artifact.manifest.export.tolerance


def test_archive_round_trip(tiny_artifact_dir: Path, tmp_path: Path) -> None:
    archive = pack_artifact(tiny_artifact_dir, tmp_path / "engine.tar.gz")
    artifact = load_artifact(archive, extract_to=tmp_path / "unpacked")
    assert artifact.identity == load_artifact(tiny_artifact_dir).identity


def test_checksum_mismatch_names_the_file(artifact_copy: Path) -> None:
    graph = artifact_copy / "encoder.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=r"encoder\.onnx.*differs") as info:
        load_artifact(artifact_copy)
    assert info.value.path == "encoder.onnx"
    assert "copy the artifact again" in str(info.value)


def test_missing_file_names_the_file(artifact_copy: Path) -> None:
    (artifact_copy / "tokenizer.json").unlink()
    with pytest.raises(ArtifactNotFoundError, match=r"tokenizer\.json.*missing"):
        load_artifact(artifact_copy)


def test_missing_manifest(artifact_copy: Path) -> None:
    (artifact_copy / MANIFEST_NAME).unlink()
    with pytest.raises(ManifestError, match=r"manifest\.json: missing"):
        load_artifact(artifact_copy)


def test_truncated_manifest(artifact_copy: Path) -> None:
    path = artifact_copy / MANIFEST_NAME
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_artifact(artifact_copy)


@pytest.mark.parametrize("version", ["2.0", "1.9", "0.3", "one"])
def test_incompatible_format_version(artifact_copy: Path, version: str) -> None:
    _edit_manifest(artifact_copy, format_version=version)
    with pytest.raises(IncompatibleArtifactError, match=r"manifest\.json"):
        load_artifact(artifact_copy)


def test_schema_violation(artifact_copy: Path) -> None:
    _edit_manifest(artifact_copy, findings=[])
    with pytest.raises(ManifestError, match="schema"):
        load_artifact(artifact_copy)


def test_referenced_file_without_checksum(artifact_copy: Path) -> None:
    data = json.loads((artifact_copy / MANIFEST_NAME).read_text(encoding="utf-8"))
    del data["files"]["decoder_step.onnx"]
    (artifact_copy / MANIFEST_NAME).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ManifestError, match=r"decoder_step\.onnx is used but has no checksum"):
        load_artifact(artifact_copy)


def test_path_outside_artifact_refused(artifact_copy: Path) -> None:
    data = json.loads((artifact_copy / MANIFEST_NAME).read_text(encoding="utf-8"))
    data["files"]["../outside.bin"] = "0" * 64
    (artifact_copy / MANIFEST_NAME).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ManifestError, match="outside the artifact"):
        load_artifact(artifact_copy)


def test_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFoundError):
        load_artifact(tmp_path / "nope")
    stray = tmp_path / "stray.bin"
    stray.write_bytes(b"not a tar")
    with pytest.raises(ArtifactError, match="neither an artifact directory nor a tar"):
        load_artifact(stray)


def test_finding_set_mismatch_with_graph_refused(artifact_copy: Path) -> None:
    """A manifest whose finding set no longer matches the graph's outputs is refused."""
    artifact = load_artifact(artifact_copy)
    shorter = artifact.manifest.model_copy(update={"findings": artifact.manifest.findings[:-1]})
    rewritten = write_manifest(artifact_copy, shorter)  # checksums valid: only shapes differ
    with pytest.raises(IncompatibleArtifactError, match=r"encoder\.onnx: output probs"):
        create_backend("onnxruntime", load_artifact(rewritten.root))


def test_test_artifact_is_refused_by_default(tiny_artifact: EngineArtifact) -> None:
    with pytest.raises(ArtifactError, match="test artifact with random weights"):
        create_engine(tiny_artifact)


def test_unconfirmed_codes_are_reported_in_the_local_scheme() -> None:
    from engine.artifact import FindingSpec

    spec = dict(
        key="enlarged_cardiomediastinum",
        code_value="123",
        code_scheme="SCT",
        name_es="Mediastino ensanchado",
    )
    confirmed = FindingSpec(**spec).to_code()
    assert (confirmed.scheme, confirmed.value) == ("SCT", "123")
    unconfirmed = FindingSpec(**spec, code_verified=False, local_code="CXR-ENLCARDMED").to_code()
    assert (unconfirmed.scheme, unconfirmed.value) == ("99CXR", "CXR-ENLCARDMED")
    assert unconfirmed.meaning_es == "Mediastino ensanchado"
    # An artifact written before local codes: the key, cut to Code Value's 16 characters.
    older = FindingSpec(**spec, code_verified=False).to_code()
    assert (older.scheme, older.value) == ("99CXR", "enlarged_cardiom")
