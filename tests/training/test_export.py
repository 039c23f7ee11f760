"""Export to the engine artifact: graphs checked, agreement recorded, refusals, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from engine.artifact import MANIFEST_NAME, EngineArtifact, load_artifact
from tests.support.tiny_engine import build_tiny_model, tiny_corpus
from training.exceptions import TrainingError
from training.export import export_artifact
from training.findings import FINDINGS
from training.models.tokenizer import train_report_tokenizer


@pytest.fixture(scope="module")
def tiny(tiny_artifact: EngineArtifact) -> EngineArtifact:
    """The tiny engine shared by the whole session (tests/conftest.py, support.tiny_engine)."""
    return tiny_artifact


def test_graphs_are_valid_onnx_with_kv_cache_io(tiny: object) -> None:
    root = tiny.root  # type: ignore[attr-defined]
    encoder = onnx.load(str(root / "encoder.onnx"))
    decoder = onnx.load(str(root / "decoder_step.onnx"))
    onnx.checker.check_model(encoder, full_check=True)
    onnx.checker.check_model(decoder, full_check=True)
    assert [i.name for i in decoder.graph.input] == [
        "tokens",
        "cross_keys",
        "cross_values",
        "past_keys",
        "past_values",
    ]
    assert [o.name for o in decoder.graph.output] == ["logits", "present_keys", "present_values"]
    # Batch and cache length are symbolic so one graph serves every step and batch size.
    past = decoder.graph.input[3].type.tensor_type.shape.dim
    assert past[0].dim_param and past[3].dim_param


def test_manifest_records_agreement_and_training_summary(tiny: object) -> None:
    manifest = json.loads((tiny.root / MANIFEST_NAME).read_text(encoding="utf-8"))  # type: ignore[attr-defined]
    diffs = manifest["export"]["max_abs_diff"]
    assert set(diffs) == {
        "encoder.cross_keys",
        "encoder.cross_values",
        "encoder.probs",
        "encoder.boxes",
        "encoder.features",
        "decoder_step.logits",
        "decoder_step.present_keys",
        "decoder_step.present_values",
    }
    assert max(diffs.values()) <= manifest["export"]["tolerance"] == 1e-4
    # The pooled features feed the runtime's image gate (format 1.2).
    assert manifest["format_version"] == "1.2"
    assert manifest["graphs"]["encoder"]["outputs"][-1] == "features"
    assert manifest["export"]["torch_version"] == torch.__version__
    assert manifest["purpose"] == "test"
    assert manifest["input"] == {
        "height": 64,
        "width": 64,
        "views": ["frontal"],
        "resize": "letterbox",
        "pad_value": 0.0,
        "mean": 0.5,
        "std": 0.25,
        "missing_lateral": "repeat_frontal",
        "normalization": "robust-percentile-v1",
        "train_letterbox": "none",
        "train_letterbox_p": 0.5,
        "train_aspect_range": [0.8, 1.0],
    }


def test_refuses_mismatched_finding_set(tmp_path: Path) -> None:
    model = build_tiny_model()
    tokenizer = train_report_tokenizer(tiny_corpus(), vocab_size=256)
    with pytest.raises(TrainingError, match="findings"):
        export_artifact(
            model, tokenizer, tmp_path / "a", name="x", version="1", findings=FINDINGS[:-1]
        )
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "stale.onnx").write_bytes(b"old")
    with pytest.raises(TrainingError, match="not empty"):
        export_artifact(model, tokenizer, tmp_path / "b", name="x", version="1", findings=FINDINGS)


def test_refuses_unfaithful_graph(tmp_path: Path) -> None:
    """An impossible tolerance shows the agreement check really runs and blocks the export."""
    tokenizer = train_report_tokenizer(tiny_corpus(), vocab_size=256)
    with pytest.raises(TrainingError, match="differs from PyTorch"):
        export_artifact(
            build_tiny_model(),
            tokenizer,
            tmp_path / "c",
            name="x",
            version="1",
            findings=FINDINGS,
            tolerance=0.0,
        )


@pytest.mark.slow
def test_cli_exports_a_checkpoint(tmp_path: Path) -> None:
    from training.cli import main

    model = build_tiny_model(seed=3)
    tokenizer = train_report_tokenizer(tiny_corpus(), vocab_size=256)
    checkpoint = tmp_path / "model.pt"
    torch.save(
        {
            "model_name": "cxr_tiny",
            "model_config": {k: v for k, v in model.config.to_dict().items()},
            "state_dict": model.state_dict(),
            "tokenizer": tokenizer.to_str(),
            "finding_keys": [f.key for f in FINDINGS],
            "thresholds": {"cardiomegaly": [0.7, 0.3]},
            "training": json.dumps({"data": "none", "notes": "cli test"}),
        },
        checkpoint,
    )
    out = tmp_path / "engine"
    assert (
        main(
            [
                "export",
                str(checkpoint),
                str(out),
                "--name",
                "cli",
                "--version",
                "9",
                "--purpose",
                "test",
            ]
        )
        == 0
    )
    artifact = load_artifact(out)
    assert artifact.identity.name == "cli"
    cardio = next(f for f in artifact.manifest.findings if f.key == "cardiomegaly")
    assert (cardio.threshold_present, cardio.threshold_absent) == (0.7, 0.3)
    assert artifact.manifest.training.notes == "cli test"


def test_exported_max_length_fits_the_decoder_positions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """BOS takes the first position: the manifest's max_length is max_positions - 1, so the
    runtime has nothing to clamp (it used to warn on every engine run)."""
    import logging

    from engine.artifact import DecodingDefaults
    from engine.runtime import create_engine
    from training.export import decoding_within

    model = build_tiny_model()
    tokenizer = train_report_tokenizer(tiny_corpus(), vocab_size=256)
    artifact = export_artifact(
        model, tokenizer, tmp_path / "e", name="x", version="1", findings=FINDINGS,
        purpose="test",
    )
    positions = artifact.manifest.decoder.max_positions
    assert artifact.manifest.decoding.max_length == positions - 1
    with caplog.at_level(logging.WARNING):
        create_engine(artifact.root, "onnxruntime", allow_test_artifact=True)
    assert not [r for r in caplog.records if "max_length" in r.getMessage()]
    # A recipe's explicit length is kept when it fits, brought within the positions if not.
    fits = DecodingDefaults(max_length=40, min_length=4)
    assert decoding_within(fits, 128) == fits
    long = decoding_within(DecodingDefaults(max_length=200, min_length=150), 128)
    assert (long.max_length, long.min_length) == (127, 127)
