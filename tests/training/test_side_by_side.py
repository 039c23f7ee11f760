"""scripts/side_by_side.py: the publishable NIH sample holds no report text; the IU X-Ray side
by side with references is refused inside the repository."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
SCRIPT = REPO / "scripts" / "side_by_side.py"
ENGINE = REPO / "engines" / "cxr-unpaired-es"


@pytest.fixture(scope="module")
def script() -> dict:  # type: ignore[type-arg]
    return runpy.run_path(str(SCRIPT))


def test_nih_sample_has_labels_coded_findings_and_the_report(
    script: dict, shared_data: Path, tmp_path: Path  # type: ignore[type-arg]
) -> None:
    out = tmp_path / "sample.md"
    assert script["main"](["nih", "--engine", str(ENGINE), "--nih", str(shared_data / "nih"),
                           "--n", "2", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| 0")]
    assert len(rows) == 2
    for row in rows:
        image, labels, coded, report = (c.strip() for c in row.strip("|").split(" | "))
        assert image.endswith(".jpg") and labels
        assert "Sin hallazgos patológicos: " in coded  # the engine's no-finding output
        assert "Hallazgos: " in report and "Impresión: " in report
    assert "no aptos para uso diagnóstico" in text and "Wang et al." in text
    html = tmp_path / "sample.html"
    assert script["main"](["nih", "--engine", str(ENGINE), "--nih", str(shared_data / "nih"),
                           "--n", "1", "--out", str(html)]) == 0
    assert 'lang="es"' in html.read_text(encoding="utf-8")


def test_nih_labels_keep_the_dataset_names(script: dict) -> None:  # type: ignore[type-arg]
    names = script["nih_labels_en"]
    assert names({"no_finding": "present", "pneumonia": "absent"}) == ["No Finding"]
    assert set(names({"pneumonia": "present", "pleural_effusion": "present",
                      "atelectasis": "absent"})) == {"Pneumonia", "Effusion"}


def test_iu_side_by_side_is_refused_inside_the_repository(
    script: dict, shared_data: Path  # type: ignore[type-arg]
) -> None:
    out = REPO / "docs" / "samples" / "iu.md"
    assert script["main"](["iu", "--annotation",
                           str(shared_data / "iu_xray" / "r2gen_split_annotation.json"),
                           "--n", "1", "--out", str(out)]) == 2
    assert not out.exists()
