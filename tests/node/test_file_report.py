"""``dicomnode report FILE ...``: an administrator tries the configured engine without a PACS."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from dicomnode.cli import main
from engine.artifact import EngineArtifact, copy_artifact, load_artifact, write_manifest


@pytest.fixture(scope="module")
def evaluation_artifact(
    tiny_artifact: EngineArtifact, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny engine relabelled as an evaluation engine, which the node's commands accept
    (they refuse test artifacts, and nothing trained is small enough for a unit test)."""
    root = copy_artifact(tiny_artifact.root, tmp_path_factory.mktemp("eval") / "engine")
    manifest = load_artifact(root).manifest
    write_manifest(root, manifest.model_copy(update={"purpose": "evaluation"}))
    return root


@pytest.fixture
def config_file(tmp_path: Path, evaluation_artifact: Path) -> Path:
    config = tmp_path / "node.toml"
    config.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\n[engine]\nartifact = "{evaluation_artifact}"\n'
    )
    return config


def test_report_prints_the_spanish_draft_and_writes_the_objects(
    config_file: Path, dicom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [
        str(dicom_dir / "rg1_chest_cr_uncompressed.dcm"),
        str(dicom_dir / "siim_chest_cr_jpeg_baseline.dcm"),
    ]
    out = tmp_path / "objects"
    assert main(["--config", str(config_file), "report", *files, "--out", str(out), "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert len(reports) == 2  # two studies in the two files
    for report in reports:
        assert report["sections"]
        assert len(report["findings"]) > 0
        written = [pydicom.dcmread(p) for p in report["objects"]]
        sr = [ds for ds in written if ds.Modality == "SR"]
        assert sr and all(ds.VerificationFlag == "UNVERIFIED" for ds in sr)
        assert all(ds.StudyInstanceUID == report["study_instance_uid"] for ds in written)
    assert main(["--config", str(config_file), "report", files[0]]) == 0
    text = capsys.readouterr().out
    assert "BORRADOR PRELIMINAR" in text
    assert "Estudio " in text


def test_report_names_a_file_that_is_not_dicom(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    assert main(["--config", str(config_file), "report", str(junk)]) == 2
    assert "notes.txt" in capsys.readouterr().err


def test_report_without_an_engine_says_what_to_set(
    tmp_path: Path, dicom_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n[engine]\nartifact = ""\n')
    image = str(dicom_dir / "rg1_chest_cr_uncompressed.dcm")
    assert main(["--config", str(config), "report", image]) == 2
    assert "engine.artifact" in capsys.readouterr().err
