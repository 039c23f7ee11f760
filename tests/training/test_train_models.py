"""The encoder family (timm backbones with one input channel, never downloaded, initialised
from a local file) and the artifact format 1.1 (findings prompt) beside 1.0 artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pydicom
import pytest
import torch

from engine.artifact import (
    ENCODER_OUTPUTS,
    MANIFEST_NAME,
    EngineArtifact,
    copy_artifact,
    load_artifact,
    sha256_file,
)
from engine.exceptions import ArtifactError
from training.findings import FINDINGS
from training.models import CXRReportModel, create_model
from training.models.encoder import create_encoder, list_encoders, load_init_weights

N_FINDINGS = len(FINDINGS)
N_LOCATABLE = sum(1 for f in FINDINGS if f.locatable)


@pytest.mark.parametrize(
    ("name", "tokens"), [("densenet121", 4), ("resnet50", 4), ("vit_small", 17)]
)
def test_timm_encoders_take_one_channel_and_give_tokens(name: str, tokens: int) -> None:
    assert {"cnn", "densenet121", "resnet50", "vit_small"} <= set(list_encoders())
    torch.manual_seed(0)
    encoder = create_encoder(name, image_size=64, d_model=32).eval()
    with torch.no_grad():
        out = encoder(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, tokens, 32)  # CNNs: (64/32)^2 cells; ViT: (64/16)^2 + class token


def test_init_weights_from_a_local_rgb_file_are_adapted_to_one_channel(tmp_path: Path) -> None:
    import timm

    rgb = timm.create_model("resnet50", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet50.pth"
    torch.save(rgb.state_dict(), path)
    encoder = create_encoder("resnet50", image_size=64, d_model=32)
    missing, left_out = load_init_weights(encoder, path)
    assert not missing and left_out == ["fc.bias", "fc.weight"]
    conv = encoder.backbone.conv1.weight  # type: ignore[union-attr]
    assert conv.shape[1] == 1
    assert torch.allclose(conv, rgb.conv1.weight.sum(dim=1, keepdim=True))
    with pytest.raises(ValueError, match="no tensor matches"):
        load_init_weights(create_encoder("vit_small", image_size=64, d_model=32), path)
    with pytest.raises(FileNotFoundError, match="--init-weights"):
        load_init_weights(encoder, tmp_path / "absent.pth")


def _prompt_model() -> CXRReportModel:
    torch.manual_seed(0)
    model = create_model(
        "cxr_tiny",
        num_findings=N_FINDINGS,
        num_locatable=N_LOCATABLE,
        vocab_size=256,
        decoder_memory=("image", "findings"),
    )
    assert isinstance(model, CXRReportModel)
    return model.eval()


def test_prompt_table_equals_the_prompt_the_model_computes() -> None:
    model = _prompt_model()
    keys, values = model.prompt_table()
    states = torch.randint(0, 3, (2, N_FINDINGS))
    with torch.no_grad():
        want_k, want_v = model.decoder.cross_cache(model.prompt_memory(states))
    from engine.decoding import FindingPrompt

    prompt = FindingPrompt.__new__(FindingPrompt)
    prompt._keys = keys.detach().numpy().transpose(3, 0, 1, 2, 4)
    prompt._values = values.detach().numpy().transpose(3, 0, 1, 2, 4)
    got_k, got_v = prompt.cross(states.numpy())
    np.testing.assert_allclose(got_k, want_k.numpy(), atol=1e-6)
    np.testing.assert_allclose(got_v, want_v.numpy(), atol=1e-6)


@pytest.fixture(scope="module")
def prompt_artifact(tmp_path_factory: pytest.TempPathFactory) -> EngineArtifact:
    from tests.support.tiny_engine import tiny_corpus
    from training.export import export_artifact
    from training.models.tokenizer import train_report_tokenizer

    return export_artifact(
        _prompt_model(),
        train_report_tokenizer(tiny_corpus(), vocab_size=256),
        tmp_path_factory.mktemp("prompt") / "engine",
        name="prompt-test",
        version="0",
        findings=FINDINGS,
        purpose="test",
    )


def test_prompt_artifact_reports_with_the_predicted_findings_on_both_cpu_backends(
    prompt_artifact: EngineArtifact, dicom_dir: Path
) -> None:
    from engine.runtime import create_engine

    manifest = prompt_artifact.manifest
    assert manifest.format_version == "1.2" and manifest.prompt is not None
    assert manifest.decoder.memory == ("image", "findings")
    assert manifest.decoder.memory_tokens == 16 + N_FINDINGS  # 4x4 image tokens + prompt
    ds = pydicom.dcmread(dicom_dir / "siim_chest_cr_jpeg_baseline.dcm")
    texts = []
    for backend in ("onnxruntime", "torch"):
        engine = create_engine(prompt_artifact, backend, allow_test_artifact=True, max_length=12)
        report = engine.report_study([ds])
        texts.append(report.sections)
        # The prompt is the thresholded findings the report states.
        states = engine.prompt_states(
            np.array([[f.probability for f in report.findings]], dtype=np.float32)
        )
        index = {"absent": 0, "uncertain": 1, "present": 2}
        assert states.tolist() == [[index[f.presence] for f in report.findings]]
    assert texts[0] == texts[1]


def test_format_1_0_artifacts_still_load_and_a_prompt_needs_1_1(
    tiny_artifact: EngineArtifact,
    prompt_artifact: EngineArtifact,
    tmp_path: Path,
    dicom_dir: Path,
) -> None:
    from engine.runtime import create_engine

    old = copy_artifact(tiny_artifact.root, tmp_path / "old")
    manifest = json.loads((old / MANIFEST_NAME).read_text())
    manifest["format_version"] = "1.0"
    del manifest["prompt"]
    manifest["decoder"].pop("memory")
    manifest["training"].pop("path")
    manifest["training"].pop("datasets")
    # Before 1.2 the encoder had no "features" output (the image gate's).
    encoder = onnx.load(str(old / "encoder.onnx"))
    del encoder.graph.output[len(ENCODER_OUTPUTS) :]
    onnx.save(encoder, str(old / "encoder.onnx"))
    manifest["graphs"]["encoder"]["outputs"] = list(ENCODER_OUTPUTS)
    manifest["gate"].pop("feature_stats")
    manifest["files"]["encoder.onnx"] = sha256_file(old / "encoder.onnx")
    (old / MANIFEST_NAME).write_text(json.dumps(manifest))
    loaded = load_artifact(old)
    assert loaded.manifest.decoder.memory == ("image",) and loaded.manifest.prompt is None
    engine = create_engine(loaded, "onnxruntime", allow_test_artifact=True, max_length=8)
    assert engine.report_study([pydicom.dcmread(dicom_dir / "siim_chest_cr_jpeg_baseline.dcm")])

    bad = copy_artifact(prompt_artifact.root, tmp_path / "bad")
    manifest = json.loads((bad / MANIFEST_NAME).read_text())
    manifest["format_version"] = "1.0"
    (bad / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"needs format 1\.1"):
        load_artifact(bad)
    manifest["format_version"] = "1.3"
    (bad / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="upgrade the runtime"):
        load_artifact(bad)


def test_a_corrupt_prompt_table_is_refused(prompt_artifact: EngineArtifact, tmp_path: Path) -> None:
    from engine.artifact import write_manifest
    from engine.runtime import create_engine

    broken = copy_artifact(prompt_artifact.root, tmp_path / "broken")
    np.savez(
        broken / "finding_prompt.npz",
        keys=np.zeros((3, 1, 1, 1, 1), np.float32),
        values=np.zeros((3, 1, 1, 1, 1), np.float32),
    )
    write_manifest(broken, prompt_artifact.manifest)
    with pytest.raises(ArtifactError, match="re-export the engine"):
        create_engine(broken, "onnxruntime", allow_test_artifact=True)


def test_no_finding_is_absent_where_another_finding_is_present() -> None:
    from training.train.data import with_implied_no_finding

    assert with_implied_no_finding({"edema": "present"}) == {
        "edema": "present", "no_finding": "absent"
    }
    assert with_implied_no_finding({"edema": "absent"}) == {"edema": "absent"}
    assert with_implied_no_finding({"no_finding": "present"}) == {"no_finding": "present"}
