"""Out of the box: the embedded defaults run the committed demonstration engine, which writes
a Spanish draft for a real chest CR and refuses the canine thorax."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicomnode.cli import main
from dicomnode.config import BUNDLED_ENGINE, Config, load_config
from engine.artifact import load_artifact

pytestmark = pytest.mark.skipif(
    not (BUNDLED_ENGINE / "manifest.json").is_file(),
    reason=f"no bundled engine at {BUNDLED_ENGINE} (an installed wheel carries none)",
)


@pytest.fixture
def defaults_file(tmp_path: Path) -> Path:
    """Only the data folder moves; the engine is the embedded default."""
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n')
    return config


def test_the_default_engine_is_the_bundled_one_and_loads() -> None:
    assert Config().engine.artifact == BUNDLED_ENGINE
    manifest = load_artifact(BUNDLED_ENGINE).manifest
    assert manifest.purpose != "test" and "not for diagnostic use" in manifest.description
    assert manifest.languages == ("es",)
    assert all(g.torch is None for g in manifest.graphs.values())  # ONNX graphs only
    size = sum(p.stat().st_size for p in BUNDLED_ENGINE.rglob("*") if p.is_file())
    assert size <= 30 * 1024 * 1024


def test_shipped_config_names_the_bundled_engine() -> None:
    shipped = Path(__file__).resolve().parents[2] / "config" / "dicomnode.toml"
    assert load_config(shipped, environ={}).engine.artifact == BUNDLED_ENGINE


def test_report_with_the_defaults_prints_a_spanish_draft(
    defaults_file: Path, dicom_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = dicom_dir / "rg1_chest_cr_uncompressed.dcm"
    assert main(["--config", str(defaults_file), "report", str(image), "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert set(report["sections"]) <= {"Hallazgos", "Impresión"} and report["sections"]
    manifest = load_artifact(BUNDLED_ENGINE).manifest
    assert {f["key"] for f in report["findings"]} == {f.key for f in manifest.findings}
    assert main(["--config", str(defaults_file), "report", str(image)]) == 0
    assert "BORRADOR PRELIMINAR" in capsys.readouterr().out


def test_the_canine_thorax_is_not_reportable(
    defaults_file: Path, dicom_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = dicom_dir / "highdicom_dx_canine_thorax.dcm"
    assert main(["--config", str(defaults_file), "report", str(image)]) == 1
    captured = capsys.readouterr()
    assert "not reported" in captured.err and "BORRADOR" not in captured.out
