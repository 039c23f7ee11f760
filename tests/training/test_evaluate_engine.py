"""``training evaluate --engine``: an engine artifact reports a split's images in a subprocess
(``python -m engine.predict``) and its predictions are scored like a predictions file.

The dataset is a tiny R2Gen IU X-Ray layout built in tmp_path: the real reports of four test
studies with real NIH radiographs standing in for the IU images (which are not available here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.artifact import EngineArtifact
from training.cli import main
from training.data import create_dataset
from training.evaluate import evaluate_predictions, load_predictions
from training.metrics.nlg import METRIC_NAMES

NIH_IMAGES = ("00000150_002.jpg", "00000165_001.jpg", "00000193_019.jpg", "00000211_013.jpg")
BROKEN = 2  # the study whose two images are corrupt PNG files


@pytest.fixture
def iu_root(shared_data: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """R2Gen layout (annotation.json, images/<id>/<n>.png) with four real test reports."""
    annotation = json.loads(
        (shared_data / "iu_xray" / "r2gen_split_annotation.json").read_text("utf-8")
    )
    entries = annotation["test"][:4]
    root = tmp_path / "iu"
    for index, (entry, name) in enumerate(zip(entries, NIH_IMAGES, strict=True)):
        folder = root / "images" / entry["id"]
        folder.mkdir(parents=True)
        with Image.open(shared_data / "nih" / "images_512" / name) as img:
            img.convert("L").save(folder / "0.png")
            img.convert("L").crop((96, 0, 416, 512)).save(folder / "1.png")  # portrait
        if index == BROKEN:
            for png in ("0.png", "1.png"):
                data = (folder / png).read_bytes()
                (folder / png).write_bytes(data[: len(data) // 3])  # truncated
    subset = {"train": [], "val": [], "test": entries}
    (root / "annotation.json").write_text(json.dumps(subset), "utf-8")
    return root, [e["id"] for e in entries]


def _evaluate(*extra: str, root: Path, out: Path) -> int:
    return main(["evaluate", *extra, "--dataset", "iu_xray", "--root", str(root),
                 "--split", "test", "--sections", "findings", "--out", str(out)])


def test_engine_evaluation_writes_every_metric_and_its_inputs(
    iu_root: tuple[Path, list[str]], tiny_artifact: EngineArtifact, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, ids = iu_root
    out = tmp_path / "eval"
    assert _evaluate("--engine", str(tiny_artifact.root), "--allow-test-artifact",
                     "--max-batch", "2", root=root, out=out) == 0
    printed = capsys.readouterr().out
    assert "1 studies failed and are not scored" in printed

    # The study list: every scorable study, absolute image paths, no view in the R2Gen layout.
    studies = [json.loads(x) for x in (out / "studies.jsonl").read_text("utf-8").splitlines()]
    assert [s["study_id"] for s in studies] == ids
    for study in studies:
        assert [Path(i["path"]).name for i in study["images"]] == ["0.png", "1.png"]
        assert all(Path(i["path"]).is_absolute() and i["view"] is None for i in study["images"])

    # The predictions: three reports and one error line, with the engine that made them.
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text("utf-8").splitlines()]
    assert [x["study_id"] for x in lines] == ids
    assert lines[BROKEN]["error_type"] == "PixelDecodeError" and "report" not in lines[BROKEN]
    for line in lines[:BROKEN] + lines[BROKEN + 1 :]:
        assert line["report"] and line["report"] == " ".join(line["sections"].values())
        assert line["engine"]["sha256"] == tiny_artifact.identity.sha256

    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    assert metrics["n_studies"] == 3
    assert metrics["missing_predictions"] == 0
    assert metrics["failed_predictions"] == 1
    assert list(metrics["failed_studies"]) == [ids[BROKEN]]
    assert set(METRIC_NAMES) <= set(metrics["nlg"])
    for name in METRIC_NAMES:
        value = metrics["nlg"][name]
        assert value is None or 0.0 <= value <= (10.0 if name == "CIDEr" else 1.0), name
    assert metrics["clinical"]["micro"].keys() >= {"precision", "recall", "f1"}
    assert metrics["clinical_chexpert14"] is not None

    table = (out / "metrics.md").read_text("utf-8")
    assert "| " + " | ".join(METRIC_NAMES) + " |" in table
    assert "could not report (not scored): 1." in table

    config = json.loads((out / "evaluate-config.json").read_text("utf-8"))
    assert config["arguments"]["engine"] == str(tiny_artifact.root)
    assert config["arguments"]["predictions"] is None
    assert config["predict_command"][1:3] == ["-m", "engine.predict"]
    assert "--allow-test-artifact" in config["predict_command"]

    # The same numbers as scoring the written predictions file directly, in two ways.
    again = tmp_path / "again"
    assert _evaluate("--predictions", str(out / "predictions.jsonl"), root=root, out=again) == 0
    assert json.loads((again / "metrics.json").read_text("utf-8")) == metrics
    assert (again / "per_study.jsonl").read_text() == (out / "per_study.jsonl").read_text()
    predictions = load_predictions(out / "predictions.jsonl")
    direct = evaluate_predictions(
        predictions.reports, list(create_dataset("iu_xray", root, split="test")),
        sections=("findings",), failed=predictions.errors, meteor=False,
    )
    assert direct.nlg == {**metrics["nlg"], "METEOR": None}
    assert direct.clinical.as_dict() == metrics["clinical"]


def test_engine_refusal_stops_the_evaluation(
    iu_root: tuple[Path, list[str]], tiny_artifact: EngineArtifact, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    root, _ = iu_root
    out = tmp_path / "eval"
    # Without --allow-test-artifact the runtime refuses random weights: no metrics are written.
    assert _evaluate("--engine", str(tiny_artifact.root), "--no-meteor", root=root, out=out) == 2
    err = capfd.readouterr().err
    assert "test artifact" in err and "engine.predict exited with status 2" in err
    assert not (out / "metrics.json").exists()


def test_engine_and_predictions_are_exclusive(
    iu_root: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, _ = iu_root
    with pytest.raises(SystemExit):
        _evaluate("--engine", "e", "--predictions", "p.jsonl", root=root, out=tmp_path)


def test_training_never_imports_the_engine_runtime() -> None:
    code = (
        "import sys, training.cli, training.evaluate;"
        "bad = [m for m in ('engine.runtime', 'engine.backends', 'onnxruntime') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
