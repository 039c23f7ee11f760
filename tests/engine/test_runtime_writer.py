"""The runtime runs the writer the manifest names and records which one wrote the text."""

from __future__ import annotations

from dataclasses import replace

from pydicom.dataset import Dataset

from engine.artifact import EngineManifest
from engine.runtime import Engine
from engine.writers import contradictions, write_structured


def _engine(ort_engine: Engine, writer: str) -> Engine:
    manifest = ort_engine.artifact.manifest.model_copy(update={"report_writer": writer})
    artifact = replace(ort_engine.artifact, manifest=manifest)
    return Engine(artifact, ort_engine.backend, ort_engine.decoding)

def test_old_manifests_load_with_the_neural_writer() -> None:
    assert EngineManifest.model_fields["report_writer"].default == "neural"

def test_structured_writer_from_the_manifest(
    ort_engine: Engine, real_datasets: dict[str, Dataset]
) -> None:
    engine = _engine(ort_engine, "structured")
    report = engine.report_study([real_datasets["siim_chest_cr_jpeg_baseline.dcm"]])
    assert report.writer == "structured"
    assert report.writer_reason == "configured writer: structured"
    manifest = engine.artifact.manifest
    bands = {f.key: (f.threshold_absent, f.threshold_present) for f in manifest.findings}
    assert report.sections == write_structured(report.findings, bands=bands)
    assert [title for title, _ in report.sections] == ["Hallazgos", "Impresión"]

def test_neural_writer_is_always_checked(
    ort_engine: Engine, real_datasets: dict[str, Dataset]
) -> None:
    report = ort_engine.report_study([real_datasets["siim_chest_cr_jpeg_baseline.dcm"]])
    assert report.writer in ("neural", "structured")
    text = " ".join(body for _, body in report.sections)
    # Whichever writer the check settled on, the text contradicts no coded finding.
    assert contradictions(text, report.findings) == ()
    if report.writer == "neural":
        assert "check passed" in report.writer_reason
    else:
        assert "contradicted" in report.writer_reason or "no text" in report.writer_reason

def test_located_findings_carry_the_patient_side(
    ort_engine: Engine, real_datasets: dict[str, Dataset]
) -> None:
    report = ort_engine.report_study([real_datasets["siim_chest_cr_jpeg_baseline.dcm"]])
    for finding in report.findings:
        if finding.region is not None:
            assert finding.laterality in ("left", "right", "bilateral")
        else:
            assert finding.laterality is None


def test_the_structured_writer_does_not_run_the_decoder(
    ort_engine: Engine, real_datasets: dict[str, Dataset]
) -> None:
    calls = {"structured": 0, "neural": 0}
    for writer in ("structured", "neural"):
        engine = _engine(ort_engine, writer)
        step = engine.backend.decode_step

        def counted(*args: object, writer: str = writer, step: object = step) -> object:
            calls[writer] += 1
            return step(*args)  # type: ignore[operator]

        engine.backend.decode_step = counted  # type: ignore[method-assign]
        try:
            report = engine.report_study([real_datasets["siim_chest_cr_jpeg_baseline.dcm"]])
        finally:
            engine.backend.decode_step = step  # type: ignore[method-assign]
        assert report.sections
    # Decoding is most of the model time on a CPU; the structured text never reads it.
    assert calls["structured"] == 0 and calls["neural"] > 0
