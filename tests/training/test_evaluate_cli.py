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


def test_evaluate_real_iu_test_split(shared_data: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A trivial "always normal" system on the real R2Gen IU X-Ray test split, scored with the
    published protocol by default, beside the baselines, every figure with an interval."""
    ann = json.loads((shared_data / "iu_xray" / "r2gen_split_annotation.json").read_text())
    normal = (
        "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax."
    )
    preds = _write_jsonl(tmp_path / "preds.jsonl",
                         [{"study_id": e["id"], "report": normal} for e in ann["test"]])
    out = tmp_path / "out"
    assert main(["evaluate", "--predictions", str(preds), "--dataset", "iu_xray",
                 "--root", str(shared_data / "iu_xray"), "--split", "test",
                 "--out", str(out), "--no-meteor", "--bootstrap", "200"]) == 0
    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    assert metrics["n_studies"] == 590
    protocol = metrics["protocol"]
    assert protocol["name"] == "r2gen-iu-xray" and protocol["sections"] == ["findings"]
    assert protocol["tokenizer"] == "r2gen" and "R2Gen (Chen et al. 2020)" in (
        protocol["comparable_with"])
    assert metrics["bootstrap"]["n_resamples"] == 200 and metrics["bootstrap"]["seed"] == 12
    # References read back as R2Gen decodes them: its vocabulary of the 2,069 training FINDINGS
    # (threshold 3) and 59 tokens at most.
    assert protocol["vocabulary_threshold"] == 3 and protocol["max_seq_length"] == 60
    decoding = metrics["settings"]["reference_decoding"]
    assert decoding["applied"] and decoding["training_reports"] == 2069
    assert decoding["max_reference_tokens"] == 59 and decoding["vocabulary_size"] == 760
    nlg = metrics["nlg"]
    assert 0.0 < nlg["BLEU-4"] < nlg["BLEU-1"] < 1.0
    clinical = metrics["clinical"]["per_finding"]
    # Saying "normal" everywhere finds every normal study and no abnormal one.
    assert clinical["no_finding"]["recall"] == 1.0
    assert clinical["cardiomegaly"]["recall"] == 0.0
    summary = metrics["clinical_summary"]
    assert set(summary) == {"findings", "findings_without_no_finding", "chexpert14",
                            "chexpert13_without_no_finding", "chexpert5"}
    assert summary["chexpert5"]["micro"]["f1"] == 0.0
    for group in ("nlg", "chexpert14", "chexpert5", "findings"):
        for name, iv in metrics["intervals"][group].items():
            assert iv["low"] <= iv["estimate"] <= iv["high"], (group, name)
    # The baselines, scored the same way: a constant normal report reaches micro F1 about 0.5
    # on IU X-Ray (only No Finding right), a random training report less.
    base = metrics["baselines"]
    assert set(base) == {"constant_normal", "random_train"}
    assert "normal" in base["constant_normal"]["description"].lower()
    const = base["constant_normal"]["clinical_summary"]["findings"]["micro"]["f1"]
    assert 0.4 < const < 0.6
    rand = base["random_train"]["clinical_summary"]["findings"]["micro"]["f1"]
    assert 0.0 < rand < const
    assert base["random_train"]["intervals"]["nlg"]["BLEU-1"]["low"] > 0.0
    printed = capsys.readouterr().out
    for row in ("| predictions |", "| constant_normal |", "| random_train |"):
        assert printed.count(row) == 2, row  # text similarity and clinical tables
    assert "micro F1-14" in printed and "macro F1-5" in printed and " [" in printed
    md = (out / "metrics.md").read_text("utf-8")
    assert "r2gen-iu-xray" in md and "| random_train |" in md


def test_departing_from_the_protocol_is_recorded(r2gen_root: Path, tmp_path: Path) -> None:
    preds = _write_jsonl(tmp_path / "preds.jsonl", [
        {"study_id": "CXR2_IM-0002", "report": "Cardiomegaly. Small right pleural effusion."},
    ])
    out = tmp_path / "out"
    assert main(["evaluate", "--predictions", str(preds), "--dataset", "iu_xray",
                 "--root", str(r2gen_root), "--split", "val", "--out", str(out), "--no-meteor",
                 "--sections", "findings,impression", "--no-baselines", "--bootstrap", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    assert metrics["protocol"]["name"] == "custom"
    assert metrics["protocol"]["comparable_with"] == []
    assert metrics["baselines"] == {} and metrics["intervals"] == {}
    # A custom protocol is not R2Gen's: its references are not decoded.
    assert metrics["settings"]["reference_decoding"] == {"applied": False,
                                                         "reason": "not part of the protocol"}


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
