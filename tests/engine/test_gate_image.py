"""The image gate with the shipped engine: real chest radiographs pass, the canine thorax and
images that are not chest radiographs (under a chest radiograph's header) are not reportable,
and an older artifact without the features output still reports, with the gate off."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from engine.artifact import ENCODER_OUTPUTS, MANIFEST_NAME, load_artifact, sha256_file
from engine.exceptions import NotReportableError
from engine.preprocessing import dicom_to_display
from engine.runtime import Engine, create_engine

BUNDLED = Path(__file__).resolve().parents[2] / "engines" / "cxr-unpaired-es"


@pytest.fixture(scope="module")
def bundled_engine() -> Engine:
    return create_engine(BUNDLED, "onnxruntime", backend_options={"threads": 1})


def _with_pixels(template: Dataset, grey: np.ndarray) -> Dataset:
    """A chest radiograph's header (CR, chest, adult) over other pixels, as a mislabelled
    study would arrive: only the pixels can tell."""
    ds = template.copy()
    ds.file_meta = template.file_meta.copy()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pixels = np.clip(np.rint(grey * 255), 0, 255).astype(np.uint8)
    ds.Rows, ds.Columns = pixels.shape
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PixelData = pixels.tobytes()
    ds.StudyInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    return ds


def _enlarged(grey: np.ndarray, side: int = 1024) -> np.ndarray:
    return np.kron(grey, np.ones((side // grey.shape[0], side // grey.shape[1])))


@pytest.mark.parametrize(
    "name", ["rg1_chest_cr_uncompressed.dcm", "siim_chest_cr_jpeg_baseline.dcm"]
)
def test_real_chest_radiographs_pass_the_image_gate(
    bundled_engine: Engine, dicom_dir: Path, name: str
) -> None:
    assert bundled_engine.image_gate is not None, bundled_engine.image_gate_status
    report = bundled_engine.report_study([pydicom.dcmread(dicom_dir / name)])
    assert report.sections
    assert report.extra["image_gate"].startswith("feature distance")


def test_the_canine_thorax_is_not_reportable(bundled_engine: Engine, dicom_dir: Path) -> None:
    canine = pydicom.dcmread(dicom_dir / "highdicom_dx_canine_thorax.dcm")
    with pytest.raises(NotReportableError):
        bundled_engine.report_study([canine])


def test_a_ct_slice_under_a_chest_header_is_refused_by_its_pixels(
    bundled_engine: Engine, dicom_dir: Path
) -> None:
    chest = pydicom.dcmread(dicom_dir / "siim_chest_cr_jpeg_baseline.dcm")
    ct = dicom_to_display(pydicom.dcmread(pydicom.data.get_testdata_file("693_J2KI.dcm")))
    study = _with_pixels(chest, _enlarged(ct))
    (outcome,) = bundled_engine.report_studies([[study]], return_exceptions=True)
    assert isinstance(outcome, NotReportableError)
    assert "feature distance" in str(outcome) and "gate.max_feature_distance" in str(outcome)
    assert outcome.study_instance_uid == study.StudyInstanceUID


def test_noise_under_a_chest_header_is_refused_and_the_chest_beside_it_reported(
    bundled_engine: Engine, dicom_dir: Path
) -> None:
    chest = pydicom.dcmread(dicom_dir / "siim_chest_cr_jpeg_baseline.dcm")
    noise = _with_pixels(chest, np.random.default_rng(0).random((1024, 1024)))
    refused, reported = bundled_engine.report_studies(
        [[noise], [pydicom.dcmread(dicom_dir / "siim_chest_cr_jpeg_baseline.dcm")]],
        return_exceptions=True,
    )
    assert isinstance(refused, NotReportableError) and "feature distance" in str(refused)
    assert not isinstance(reported, Exception) and reported.sections


@pytest.fixture(scope="module")
def older_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped engine as format 1.1 exported it: no features output, no image gate."""
    root = Path(shutil.copytree(BUNDLED, tmp_path_factory.mktemp("older") / "engine"))
    model = onnx.load(str(root / "encoder.onnx"))
    names = [o.name for o in model.graph.output]
    del model.graph.output[names.index("features")]
    onnx.save(model, str(root / "encoder.onnx"))
    manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    (root / manifest["gate"]["feature_stats"]).unlink()
    del manifest["files"][manifest["gate"]["feature_stats"]]
    manifest["format_version"] = "1.1"
    manifest["graphs"]["encoder"]["outputs"] = list(ENCODER_OUTPUTS)
    del manifest["gate"]["max_feature_distance"], manifest["gate"]["feature_stats"]
    manifest["files"]["encoder.onnx"] = sha256_file(root / "encoder.onnx")
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return root


def test_an_older_artifact_reports_with_the_image_gate_off(
    older_artifact: Path, dicom_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert not load_artifact(older_artifact).manifest.has_image_features
    with caplog.at_level(logging.WARNING, logger="engine.runtime"):
        engine = create_engine(older_artifact, "onnxruntime", backend_options={"threads": 1})
    assert engine.image_gate is None
    assert any("image gate off" in r.getMessage() for r in caplog.records)
    report = engine.report_study([pydicom.dcmread(dicom_dir / "siim_chest_cr_jpeg_baseline.dcm")])
    assert report.sections and report.extra["image_gate"].startswith("off:")
    # The header gate still applies.
    with pytest.raises(NotReportableError):
        engine.report_study([pydicom.dcmread(dicom_dir / "highdicom_dx_canine_thorax.dcm")])
