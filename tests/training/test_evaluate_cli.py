"""``training evaluate`` end to end: predictions file in, metrics.json and metrics.md out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cli import main
from training.evaluate import read_predictions
from training.exceptions import PredictionsError


def _write_jsonl(path: Path, items: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items), "utf-8")
    return path


def test_evaluate_on_a_tiny_r2gen_split(r2gen_root: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    preds = _write_jsonl(tmp_path / "preds.jsonl", [
        {"study_id": "CXR2_IM-0002", "report": "Cardiomegaly. Small right pleural effusion."},
    ])
    out = tmp_path / "out"
    code = main(["evaluate", "--predictions", str(preds), "--dataset", "iu_xray",
                 "--root", str(r2gen_root), "--split", "val", "--lang", "en",
                 "--out", str(out), "--no-meteor"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    assert metrics["n_studies"] == 1
    assert metrics["nlg"]["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["nlg"]["ROUGE-L"] == pytest.approx(1.0)
    assert metrics["nlg"]["METEOR"] is None
    assert metrics["clinical"]["micro"]["f1"] == 1.0
    assert set(metrics["clinical"]["per_finding"]) == {"cardiomegaly", "pleural_effusion"}
    assert metrics["clinical_chexpert14"]["micro"]["f1"] == 1.0
    rows = [json.loads(x) for x in (out / "per_study.jsonl").read_text("utf-8").splitlines()]
    assert rows == [{"study_id": "CXR2_IM-0002",
                     "reference_findings": {"cardiomegaly": "present",
                                            "pleural_effusion": "present"},
                     "generated_findings": {"cardiomegaly": "present",
                                            "pleural_effusion": "present"}}]
    table = (out / "metrics.md").read_text("utf-8")
    assert "| BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | METEOR | ROUGE-L | CIDEr |" in table
    assert "Cardiomegaly (`cardiomegaly`)" in table
    assert "wrote" in capsys.readouterr().out


def test_evaluate_real_iu_test_split(shared_data: Path, tmp_path: Path) -> None:
    """A trivial "always normal" system on the real R2Gen IU X-Ray test split."""
    ann = json.loads((shared_data / "iu_xray" / "r2gen_split_annotation.json").read_text())
    normal = (
        "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax."
    )
    preds = _write_jsonl(tmp_path / "preds.jsonl",
                         [{"study_id": e["id"], "report": normal} for e in ann["test"]])
    out = tmp_path / "out"
    assert main(["evaluate", "--predictions", str(preds), "--dataset", "iu_xray",
                 "--root", str(shared_data / "iu_xray"), "--split", "test",
                 "--sections", "findings", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    assert metrics["n_studies"] == 590
    nlg = metrics["nlg"]
    assert 0.0 < nlg["BLEU-4"] < nlg["BLEU-1"] < 1.0
    if nlg["METEOR"] is not None:
        assert 0.0 < nlg["METEOR"] < 1.0
    clinical = metrics["clinical"]["per_finding"]
    # Saying "normal" everywhere finds every normal study and no abnormal one.
    assert clinical["no_finding"]["recall"] == 1.0
    assert clinical["cardiomegaly"]["recall"] == 0.0


def test_spanish_evaluation_on_padchest_gr(tmp_path: Path) -> None:
    from tests.training.conftest import write_csv

    root = tmp_path / "pgr"
    write_csv(root / "master_table.csv", ["ImageID", "split"], [["a.png", "test"],
                                                                ["b.png", "test"]])
    (root / "grounded_reports_20240819.json").write_text(json.dumps([
        {"ImageID": "a.png", "findings": [{"sentence_es": "Derrame pleural derecho",
                                           "sentence_en": "Right pleural effusion",
                                           "abnormal": True, "boxes": [],
                                           "labels": ["pleural effusion"]}]},
        {"ImageID": "b.png", "findings": [{"sentence_es": "Cardiomegalia",
                                           "sentence_en": "Cardiomegaly", "abnormal": True,
                                           "boxes": [], "labels": ["cardiomegaly"]}]},
    ]), "utf-8")
    preds = _write_jsonl(tmp_path / "p.jsonl", [
        {"study_id": "a", "report": "Sin derrame pleural."},
        {"study_id": "b", "report": "Cardiomegalia."},
    ])
    out = tmp_path / "out"
    assert main(["evaluate", "--predictions", str(preds), "--dataset", "padchest_gr",
                 "--root", str(root), "--lang", "es", "--out", str(out), "--no-meteor",
                 "--reference-labels", "dataset"]) == 0
    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    per = metrics["clinical"]["per_finding"]
    assert per["cardiomegaly"]["f1"] == 1.0
    assert per["pleural_effusion"]["recall"] == 0.0
    assert "Derrame pleural (`pleural_effusion`)" in (out / "metrics.md").read_text("utf-8")


def test_missing_predictions_fail_with_advice(r2gen_root: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"study_id": "other", "report": "x"}])
    code = main(["evaluate", "--predictions", str(preds), "--dataset", "iu_xray",
                 "--root", str(r2gen_root), "--split", "test", "--out", str(tmp_path / "o"),
                 "--no-meteor"])
    assert code == 2
    err = capsys.readouterr().err
    assert "p.jsonl" in err and "--allow-missing" in err


def test_read_predictions_formats(tmp_path: Path) -> None:
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"a": "x", "b": "y"}), "utf-8")
    assert read_predictions(mapping) == {"a": "x", "b": "y"}
    jsonl = _write_jsonl(tmp_path / "l.jsonl", [{"study_id": "a", "prediction": "x"}])
    assert read_predictions(jsonl) == {"a": "x"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"report": "x"}\n', "utf-8")
    with pytest.raises(PredictionsError, match="study_id"):
        read_predictions(bad)


def test_label_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["label", "--lang", "es", "--text", "Sin neumotórax."]) == 0
    assert json.loads(capsys.readouterr().out) == {"pneumothorax": "absent",
                                                   "no_finding": "present"}


def test_datasets_subcommand(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets"]) == 0
    assert "padchest_gr" in capsys.readouterr().out.split()
    assert main(["datasets", "--name", "nih", "--root", str(shared_data / "nih")]) == 0
    assert json.loads(capsys.readouterr().out)["studies"] == 848


def test_dataset_without_reports_is_refused(shared_data: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"study_id": "00000150_002", "report": "x"}])
    assert main(["evaluate", "--predictions", str(preds), "--dataset", "nih", "--root",
                 str(shared_data / "nih"), "--out", str(tmp_path / "o"), "--no-meteor"]) == 2
    assert "no report text" in capsys.readouterr().err
