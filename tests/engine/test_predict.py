"""``python -m engine.predict`` and ``Engine.report_image_studies``: real NIH radiographs as PNG
files in, one predictions line per study out, a broken file failing only its own study."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from engine.artifact import EngineArtifact
from engine.exceptions import PixelDecodeError
from engine.predict import main, read_study_list
from engine.runtime import Engine, ImageStudy, create_engine

NIH_IMAGES = ("00000150_002.jpg", "00000165_001.jpg", "00000193_019.jpg")


@pytest.fixture(scope="module")
def pngs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three real NIH radiographs as PNG, a portrait crop of one (a lateral's shape), a corrupt
    PNG and a path that does not exist."""
    folder = tmp_path_factory.mktemp("pngs")
    out: dict[str, Path] = {}
    for name in NIH_IMAGES:
        with Image.open(shared_data / "nih" / "images_512" / name) as img:
            out[name] = folder / name.replace(".jpg", ".png")
            img.convert("L").save(out[name])
    with Image.open(out[NIH_IMAGES[2]]) as img:
        out["portrait"] = folder / "portrait.png"
        img.crop((100, 0, 400, 512)).save(out["portrait"])
    out["corrupt"] = folder / "corrupt.png"
    out["corrupt"].write_bytes(out[NIH_IMAGES[0]].read_bytes()[:200])  # truncated inside IDAT
    out["missing"] = folder / "missing.png"
    return out


def _study_list(path: Path, studies: list[tuple[str, list[tuple[Path, str | None]]]]) -> Path:
    lines = [
        json.dumps({"study_id": sid, "images": [{"path": str(p), "view": v} for p, v in imgs]})
        for sid, imgs in studies
    ]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def _read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_predict_writes_one_line_per_study_in_order(
    pngs: dict[str, Path], tiny_artifact: EngineArtifact, tmp_path: Path
) -> None:
    a, b, c = (pngs[n] for n in NIH_IMAGES)
    studies = _study_list(tmp_path / "studies.jsonl", [
        ("s1", [(a, "PA")]),
        ("s2", [(pngs["corrupt"], "PA"), (b, "LATERAL")]),
        ("s3", [(b, None), (c, "AP")]),
        ("s4", [(pngs["missing"], "PA")]),
        ("s5", [(c, "UNKNOWN")]),
    ])
    out = tmp_path / "preds.jsonl"
    assert main(["--engine", str(tiny_artifact.root), "--studies", str(studies),
                 "--out", str(out), "--allow-test-artifact", "--max-batch", "2"]) == 0
    lines = _read_lines(out)
    assert [line["study_id"] for line in lines] == ["s1", "s2", "s3", "s4", "s5"]
    identity = tiny_artifact.identity
    keys = [f.key for f in tiny_artifact.manifest.findings]
    for line in lines:
        assert line["engine"] == {"name": identity.name, "version": identity.version,
                                  "sha256": identity.sha256}
    for line in (lines[0], lines[2], lines[4]):
        sections = line["sections"]
        assert isinstance(sections, dict) and sections
        assert line["report"] == " ".join(sections.values())
        assert isinstance(line["findings"], dict) and list(line["findings"]) == keys
        assert set(line["findings"].values()) <= {"present", "absent", "uncertain"}
        assert isinstance(line["probabilities"], dict)
        assert all(0.0 <= p <= 1.0 for p in line["probabilities"].values())
        assert "error" not in line
    assert lines[1]["error_type"] == "PixelDecodeError" and "s2" in str(lines[1]["error"])
    assert lines[3]["error_type"] == "NoUsableImageError"
    assert "missing.png" in str(lines[3]["error"])
    assert "report" not in lines[1] and "report" not in lines[3]


def test_batch_size_does_not_change_the_reports(
    pngs: dict[str, Path], tiny_artifact: EngineArtifact, tmp_path: Path
) -> None:
    studies = _study_list(tmp_path / "studies.jsonl",
                          [(f"s{i}", [(pngs[n], "PA")]) for i, n in enumerate(NIH_IMAGES)])
    outputs = []
    for batch in (1, 3):
        out = tmp_path / f"preds{batch}.jsonl"
        assert main(["--engine", str(tiny_artifact.root), "--studies", str(studies),
                     "--out", str(out), "--allow-test-artifact", "--max-batch", str(batch)]) == 0
        outputs.append(_read_lines(out))
    one, three = outputs
    assert [x["report"] for x in one] == [x["report"] for x in three]
    assert [x["findings"] for x in one] == [x["findings"] for x in three]
    for x, y in zip(one, three, strict=True):
        assert x["probabilities"] == pytest.approx(y["probabilities"], abs=1e-4)


def test_two_view_engine_reads_the_lateral_file(
    pngs: dict[str, Path], tiny_artifact_factory: Callable[..., EngineArtifact]
) -> None:
    engine = create_engine(tiny_artifact_factory(num_views=2), allow_test_artifact=True)
    a, portrait = pngs[NIH_IMAGES[0]], pngs["portrait"]
    both, single = engine.report_image_studies([
        ImageStudy("two", ((portrait, "LATERAL"), (a, "PA"))),
        ImageStudy("one", ((a, "PA"),)),
    ])
    # File stems identify the images; a region can only name the frontal.
    assert both.study_instance_uid == "two"
    assert both.source_sop_instance_uids == (a.stem, "portrait")
    assert single.source_sop_instance_uids == (a.stem,)
    for finding in both.findings:
        assert finding.region is None or finding.region.sop_instance_uid == a.stem


def test_errors_raise_unless_returned(pngs: dict[str, Path], ort_engine: Engine) -> None:
    good = ImageStudy("good", ((pngs[NIH_IMAGES[0]], "PA"),))
    bad = ImageStudy("bad", ((pngs["corrupt"], "PA"),))
    with pytest.raises(PixelDecodeError) as info:
        ort_engine.report_image_studies([good, bad])
    assert info.value.study_instance_uid == "bad"
    report, error = ort_engine.report_image_studies([good, bad], return_exceptions=True)
    assert not isinstance(report, Exception) and report.study_instance_uid == "good"
    assert isinstance(error, PixelDecodeError)


def test_study_list_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"study_id": "a", "images": [{"path": "x.png"}]}\n{"images": []}\n')
    with pytest.raises(ValueError, match="line 2 has no 'study_id'"):
        read_study_list(path)
    path.write_text('{"study_id": "a", "images": [{"path": "x.png", "view": "PA"}]}\n')
    (study,) = read_study_list(path)
    assert study.images == ((tmp_path / "x.png", "PA"),)  # relative to the list's folder


def test_module_entry_point_refuses_a_test_artifact(
    tiny_artifact: EngineArtifact, tmp_path: Path
) -> None:
    studies = tmp_path / "s.jsonl"
    studies.write_text('{"study_id": "a", "images": [{"path": "x.png", "view": "PA"}]}\n')
    done = subprocess.run(
        [sys.executable, "-m", "engine.predict", "--engine", str(tiny_artifact.root),
         "--studies", str(studies), "--out", str(tmp_path / "p.jsonl")],
        capture_output=True, text=True,
    )
    assert done.returncode == 2
    assert "test artifact" in done.stderr and not (tmp_path / "p.jsonl").exists()
