"""The two-image studies benchmarks/engine_backends.py times are real studies the engine takes:
one study, two images, the first one analysed as the frontal (no timing here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from engine.runtime import Engine
from engine.views import classify_view

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "engine_backends.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("engine_backends", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["frontal-lateral", "two-frontals"])
def test_two_image_studies(
    bench: ModuleType, kind: str, dicom_dir: Path, shared_data: Path, ort_engine: Engine
) -> None:
    studies = bench.build_studies(dicom_dir, shared_data / "lateral_chest" / "images", kind,
                                  False)
    assert len(studies) == 5  # the human frontals; the canine DX is not one
    for name, files in studies:
        datasets = bench._read(files)
        assert len(datasets) == 2
        assert datasets[0].StudyInstanceUID == datasets[1].StudyInstanceUID
        assert datasets[0].SOPInstanceUID != datasets[1].SOPInstanceUID
        second = classify_view(datasets[1]).view
        assert second == ("lateral" if kind == "frontal-lateral" else "frontal")
        if name.startswith("siim"):  # the fast ones (a JPEG 2000 CR takes a second to decode)
            prepared = ort_engine.prepare_study(datasets)
            assert prepared.source_sop_instance_uids[0] == datasets[0].SOPInstanceUID


def test_without_view_headers_the_pixels_choose(
    bench: ModuleType, dicom_dir: Path, shared_data: Path
) -> None:
    studies = bench.build_studies(dicom_dir, shared_data / "lateral_chest" / "images",
                                  "frontal-lateral", True)
    for _name, files in studies:
        for ds in bench._read(files):
            assert classify_view(ds).view is None
