"""The engine end to end on the real DICOM files: reports, findings, regions, failures."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from engine.artifact import EngineArtifact, load_artifact, write_manifest
from engine.backends.base import Backend, EncoderOutput, StepOutput
from engine.decoding import generate
from engine.exceptions import (
    EngineOutputError,
    NotReportableError,
    NoUsableImageError,
    PixelDecodeError,
    StudyError,
)
from engine.result import StudyReport
from engine.runtime import Engine, create_engine
from engine.writers import write_structured
from tests.engine.dicom_samples import make_dataset, phantom


def _studies(real_datasets: dict[str, Dataset]) -> list[list[Dataset]]:
    # The canine lateral DX alone has no frontal chest image: not reported (test_views.py).
    return [[ds] for name, ds in real_datasets.items() if not name.startswith("highdicom")]


def test_reports_for_every_real_file(ort_engine: Engine, real_datasets: dict[str, Dataset]) -> None:
    studies = _studies(real_datasets)
    reports = ort_engine.report_studies(studies)
    manifest = ort_engine.artifact.manifest
    assert len(reports) == len(studies)
    for report, (ds,) in zip(reports, studies, strict=True):
        assert isinstance(report, StudyReport)
        assert report.study_instance_uid == ds.StudyInstanceUID
        assert report.source_sop_instance_uids == (ds.SOPInstanceUID,)
        assert report.engine == ort_engine.identity
        assert report.language == "es"
        assert {title for title, _ in report.sections} <= {"Hallazgos", "Impresión"}
        assert all(text.strip() for _, text in report.sections)
        assert [f.key for f in report.findings] == [f.key for f in manifest.findings]
        for finding, spec in zip(report.findings, manifest.findings, strict=True):
            assert finding.code.meaning_es == spec.name_es
            if finding.probability >= spec.threshold_present:
                assert finding.presence == "present"
            elif finding.probability <= spec.threshold_absent:
                assert finding.presence == "absent"
            else:
                assert finding.presence == "uncertain"
            if finding.region is not None:
                assert spec.locatable and finding.presence != "absent"
                assert finding.region.sop_instance_uid == ds.SOPInstanceUID
                assert 0 <= finding.region.x_min < finding.region.x_max <= ds.Columns
                assert 0 <= finding.region.y_min < finding.region.y_max <= ds.Rows


def test_text_is_only_what_the_decoder_produced(
    ort_engine: Engine, real_datasets: dict[str, Dataset]
) -> None:
    study = ort_engine.prepare_study([real_datasets["siim_chest_cr_jpeg_baseline.dcm"]])
    encoded = ort_engine.backend.encode(study.images[None])
    ids = generate(
        ort_engine.backend.decode_step,
        ort_engine.backend.empty_cache,
        (encoded.cross_keys, encoded.cross_values),
        ort_engine.decoding,
        ort_engine.rules,
    )[0]
    report = ort_engine.report_study([real_datasets["siim_chest_cr_jpeg_baseline.dcm"]])
    if report.writer == "structured":
        # The check replaced a neural text that contradicted the coded findings.
        assert "contradicted" in report.writer_reason
        assert report.sections == write_structured(
            report.findings,
            bands={
                f.key: (f.threshold_absent, f.threshold_present)
                for f in ort_engine.artifact.manifest.findings
            },
        )
        return
    assert report.writer == "neural"
    assert report.sections == ort_engine.tokenizer.sections(ids)
    # Every word of the report is a word the decoder produced, and nothing else.
    words = " ".join(text for _, text in report.sections).split()
    assert sorted(words) == sorted(ort_engine.tokenizer.decode(ids).split())


def test_batched_equals_single(ort_engine: Engine, real_datasets: dict[str, Dataset]) -> None:
    studies = _studies(real_datasets)
    batched = ort_engine.report_studies(studies)
    single = [ort_engine.report_study(s) for s in studies]
    for a, b in zip(batched, single, strict=True):
        assert a.sections == b.sections
        np.testing.assert_allclose(
            [f.probability for f in a.findings], [f.probability for f in b.findings], atol=1e-5
        )


def test_regions_map_to_the_letterboxed_source() -> None:
    """A region's source box maps back onto the model-grid box the head predicted."""
    from engine.artifact import InputSpec
    from engine.preprocessing import prepare_dataset

    ds = make_dataset(phantom(300, 150, 8), bits_stored=8)  # portrait: padded left and right
    prepared = prepare_dataset(ds, InputSpec(height=64, width=64))
    box = prepared.letterbox
    x0, y0, x1, y1 = box.box_to_source((0.4, 0.25, 0.6, 0.75))
    assert (x0 * box.scale_x + box.pad_x) / 64 == pytest.approx(0.4)
    assert (y1 * box.scale_y + box.pad_y) / 64 == pytest.approx(0.75)
    assert 0 <= x0 < x1 <= 150 and 0 <= y0 < y1 <= 300


class NaNBackend(Backend):
    """Wraps the real backend and poisons one study's probabilities, as a broken GPU might."""

    name = "nan-test"

    def __init__(self, inner: Backend, poison: int) -> None:
        super().__init__(inner.artifact, inner.device)
        self.inner, self.poison = inner, poison

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        return None

    def encode(self, images: np.ndarray) -> EncoderOutput:
        out = self.inner.encode(images)
        probs = out.probs.copy()
        probs[self.poison, 0] = np.nan
        return EncoderOutput(probs, out.boxes, out.cross_keys, out.cross_values)

    def decode_step(self, *arrays: np.ndarray) -> StepOutput:  # type: ignore[override]
        return self.inner.decode_step(*arrays)


def test_nan_output_fails_only_that_study(
    ort_engine: Engine, real_datasets: dict[str, Dataset]
) -> None:
    engine = Engine(
        ort_engine.artifact, NaNBackend(ort_engine.backend, poison=1), ort_engine.decoding
    )
    studies = _studies(real_datasets)[:3]
    with pytest.raises(EngineOutputError, match="NaN") as info:
        engine.report_studies(studies)
    assert info.value.study_instance_uid == studies[1][0].StudyInstanceUID
    outcomes = engine.report_studies(studies, return_exceptions=True)
    assert isinstance(outcomes[1], EngineOutputError)
    assert isinstance(outcomes[0], StudyReport) and isinstance(outcomes[2], StudyReport)


def test_undecodable_pixels_fail_only_that_study(
    ort_engine: Engine, real_datasets: dict[str, Dataset]
) -> None:
    broken = copy.deepcopy(real_datasets["rg1_chest_cr_j2k_lossless.dcm"])
    broken.PixelData = broken.PixelData[:5000]
    good = real_datasets["siim_chest_cr_jpeg_baseline.dcm"]
    with pytest.raises(PixelDecodeError) as info:
        ort_engine.report_studies([[broken]])
    assert info.value.study_instance_uid == broken.StudyInstanceUID
    outcomes = ort_engine.report_studies([[good], [broken]], return_exceptions=True)
    assert isinstance(outcomes[0], StudyReport)
    assert isinstance(outcomes[1], PixelDecodeError)


def test_study_without_images(ort_engine: Engine) -> None:
    ds = make_dataset(phantom(8, 8, 8), bits_stored=8)
    del ds.PixelData
    with pytest.raises(NoUsableImageError):
        ort_engine.report_studies([[ds]])
    assert isinstance(ort_engine.report_studies([[ds]], return_exceptions=True)[0], StudyError)


def test_frontal_and_lateral_model(
    tiny_artifact_factory: Callable[..., EngineArtifact], real_datasets: dict[str, Dataset]
) -> None:
    """A two-view engine takes the lateral when the study has one and repeats the frontal
    when it does not."""
    artifact = tiny_artifact_factory(seed=1, num_views=2)
    assert artifact.manifest.input.views == ("frontal", "lateral")
    engine = create_engine(artifact, "onnxruntime", allow_test_artifact=True)
    frontal = real_datasets["rg1_chest_cr_uncompressed.dcm"]
    # A stand-in lateral: another real chest image labelled LL (the canine lateral, being no
    # human chest radiograph, is refused by the gate).
    lateral = copy.deepcopy(real_datasets["siim_chest_cr_jpeg_baseline.dcm"])
    lateral.StudyInstanceUID = frontal.StudyInstanceUID
    lateral.ViewPosition = "LL"
    lateral.SeriesDescription = "lateral"
    both = engine.prepare_study([lateral, frontal])
    assert both.source_sop_instance_uids == (frontal.SOPInstanceUID, lateral.SOPInstanceUID)
    assert not np.array_equal(both.images[0], both.images[1])
    alone = engine.prepare_study([frontal])
    np.testing.assert_array_equal(alone.images[0], alone.images[1])
    reports = engine.report_studies([[lateral, frontal], [frontal]])
    assert reports[0].source_sop_instance_uids == both.source_sop_instance_uids
    assert reports[1].source_sop_instance_uids == (frontal.SOPInstanceUID,)


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        ("highdicom_dx_canine_thorax.dcm", {}, "pixels"),
        ("rg1_chest_cr_uncompressed.dcm", {"Modality": "CT"}, "Modality CT"),
        ("siim_chest_cr_jpeg_baseline.dcm", {"BodyPartExamined": "HAND"}, "HAND"),
        ("siim_chest_cr_jpeg_baseline.dcm", {"PatientAge": "004Y"}, "patient age"),
    ],
)
def test_the_gate_makes_a_study_not_reportable(
    ort_engine: Engine,
    real_datasets: dict[str, Dataset],
    name: str,
    change: dict[str, str],
    expected: str,
) -> None:
    ds = copy.deepcopy(real_datasets[name])
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    with pytest.raises(NotReportableError, match=expected):
        ort_engine.prepare_study([ds])


def test_the_gate_thresholds_come_from_the_manifest(
    tiny_artifact: EngineArtifact, real_datasets: dict[str, Dataset]
) -> None:
    manifest = tiny_artifact.manifest
    assert manifest.gate.min_matrix == 256  # older manifests get the defaults
    relaxed = manifest.model_copy(
        update={"gate": manifest.gate.model_copy(update={"min_patient_age_years": None})}
    )
    engine = create_engine(
        replace(tiny_artifact, manifest=relaxed), "onnxruntime", allow_test_artifact=True
    )
    ds = copy.deepcopy(real_datasets["siim_chest_cr_jpeg_baseline.dcm"])
    ds.PatientAge = "004Y"
    assert engine.prepare_study([ds]).source_sop_instance_uids == (ds.SOPInstanceUID,)


def test_no_finding_is_never_present_beside_a_present_finding() -> None:
    from engine.result import FindingCode, FindingResult
    from engine.runtime import reconcile_no_finding

    def finding(key: str, presence: str, p: float) -> FindingResult:
        return FindingResult(key, FindingCode(key[:16], "99CXR", key), presence, p)  # type: ignore[arg-type]

    normal = finding("no_finding", "present", 0.9)
    devices = finding("support_devices", "present", 0.8)
    effusion = finding("pleural_effusion", "present", 0.7)
    assert reconcile_no_finding((normal, devices)) == (normal, devices)
    reconciled = reconcile_no_finding((normal, effusion))
    assert reconciled[0].presence == "uncertain" and reconciled[0].probability == 0.9
    assert reconciled[1] == effusion


@pytest.mark.parametrize("report_region", [True, False])
def test_no_region_or_side_for_a_finding_whose_box_head_was_not_trained(
    tiny_artifact: EngineArtifact,
    real_datasets: dict[str, Dataset],
    tmp_path: Path,
    report_region: bool,
) -> None:
    folder = tmp_path / "engine"
    shutil.copytree(tiny_artifact.root, folder)
    manifest = tiny_artifact.manifest
    region = {"report_region": report_region}
    # Every finding reads present, so every locatable one would get its box.
    findings = tuple(
        f.model_copy(update={"threshold_present": 0.0, "threshold_absent": 0.0} | region)
        for f in manifest.findings
    )
    write_manifest(folder, manifest.model_copy(update={"findings": findings}))
    engine = create_engine(load_artifact(folder), "onnxruntime", allow_test_artifact=True)
    report = engine.report_study([real_datasets["siim_chest_cr_jpeg_baseline.dcm"]])
    located = [f for f in report.findings if f.region is not None or f.laterality is not None]
    if report_region:
        assert located
    else:
        assert not located
