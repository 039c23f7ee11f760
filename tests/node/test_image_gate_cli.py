"""`dicomnode report` with the bundled engine: pixels that are not a chest radiograph under a
chest radiograph's header are not reported, and the reason names the image gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode.cli import main
from dicomnode.config import BUNDLED_ENGINE

pytestmark = pytest.mark.skipif(
    not (BUNDLED_ENGINE / "manifest.json").is_file(),
    reason=f"no bundled engine at {BUNDLED_ENGINE} (an installed wheel carries none)",
)


def test_noise_under_a_chest_header_is_not_reported(
    tmp_path: Path, dicom_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n')
    ds = pydicom.dcmread(dicom_dir / "siim_chest_cr_jpeg_baseline.dcm")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    noise = np.random.default_rng(0).integers(0, 256, (1024, 1024), dtype=np.uint8)
    ds.PixelData = noise.tobytes()
    ds.StudyInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "noise.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert main(["--config", str(config), "report", str(path)]) == 1
    captured = capsys.readouterr()
    assert "feature distance" in captured.err and "BORRADOR" not in captured.out
