"""The whole product path on loopback: storescu -> node -> stability -> worker (tiny engine)
-> report objects on disk -> delivery into the same study in Orthanc, judged by Orthanc's REST
API, dciodvfy and dsr2html. Then the same with the PACS down and the node restarted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import BasicTextSRStorage

from dicomnode.db import DeliveryState, StudyState
from dicomnode.report import DISCLAIMER_ES
from dicomnode.server import ReceivingNode
from dicomnode.worker import ReportEngine, ReportingWorker
from tests.support.dicom_peers import (
    Peer,
    dciodvfy_errors,
    dsr2html,
    free_port,
    orthanc_get,
    start_orthanc,
)

from .conftest import (
    all_in_state,
    deliveries,
    destination,
    drain,
    output_files,
    storescu,
    studies,
    study_states,
    wait_until,
)

REAL_FILES = (
    "rg1_chest_cr_uncompressed.dcm",
    "rg1_chest_cr_j2k_lossless.dcm",
    "rg1_chest_cr_j2k_lossy.dcm",
    "siim_chest_cr_jpeg_baseline.dcm",
    "siim_chest_cr_monochrome1.dcm",
    "highdicom_dx_canine_thorax.dcm",
)


def orthanc_studies(peer: Peer) -> dict[str, dict[str, list[str]]]:
    """{StudyInstanceUID: {"instances": [SOPInstanceUID, ...], "modalities": [...]}}."""
    found: dict[str, dict[str, list[str]]] = {}
    for study_id in orthanc_get(peer, "/studies"):
        study = orthanc_get(peer, f"/studies/{study_id}")
        uid = study["MainDicomTags"]["StudyInstanceUID"]
        instances = orthanc_get(peer, f"/studies/{study_id}/instances")
        series = orthanc_get(peer, f"/studies/{study_id}/series")
        found[uid] = {
            "instances": [i["MainDicomTags"]["SOPInstanceUID"] for i in instances],
            "modalities": sorted(s["MainDicomTags"].get("Modality", "") for s in series),
        }
    return found


def referenced_images(ds: pydicom.Dataset) -> set[str]:
    """SOP Instance UIDs an SR (evidence) or a presentation state (applied to) refers to."""
    found = set()
    for evidence in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in evidence.ReferencedSeriesSequence:
            found |= {str(i.ReferencedSOPInstanceUID) for i in series.ReferencedSOPSequence}
    for series in ds.get("ReferencedSeriesSequence", []):
        found |= {str(i.ReferencedSOPInstanceUID) for i in series.ReferencedImageSequence}
    return found


def delivered(node: ReceivingNode) -> bool:
    rows = deliveries(node.sessions)
    return bool(rows) and all(r.state == DeliveryState.DELIVERED for r in rows)


def test_real_files_are_reported_into_their_own_study_in_orthanc(
    make_node: Callable[..., ReceivingNode],
    report_engine: ReportEngine,
    dicom_dir: Path,
    tmp_path: Path,
) -> None:
    orthanc = start_orthanc(tmp_path / "orthanc")
    try:
        sources = [dicom_dir / name for name in REAL_FILES]
        # The PACS holds the source images; the node must add its objects to those studies.
        storescu(orthanc.port, sources, calling_ae="MODALITY")
        node = make_node(
            delivery={"destinations": [destination("pacs", orthanc.ae_title, orthanc.port)]}
        )
        storescu(node.port, sources)
        study_of = {
            p.name: str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID)
            for p in sources
        }
        queued = set(study_of.values())
        wait_until(
            lambda: all_in_state(node.sessions, StudyState.QUEUED, len(queued)),
            "every study queued after the stability window",
        )

        worker = ReportingWorker(node.config, node.sessions, report_engine, worker_id="e2e")
        assert drain(worker) == len(queued)
        # The canine lateral thorax has no frontal human chest image: not what the engine was
        # made for, so no report for it, kept apart from failures with the reason.
        canine = study_of["highdicom_dx_canine_thorax.dcm"]
        source_studies = queued - {canine}
        expected = dict.fromkeys(source_studies, StudyState.REPORTED)
        expected[canine] = StudyState.NOT_REPORTABLE
        assert study_states(node.sessions) == expected
        refused = studies(node.sessions)[canine]
        assert refused.error and refused.attempts == 0

        outputs = output_files(node.data_dir)
        rows = deliveries(node.sessions)
        # One row per written object and destination, each pointing at its own file.
        assert sorted(node.data_dir / r.path for r in rows) == outputs
        wait_until(lambda: delivered(node), "every report object delivered to Orthanc")

        in_pacs = orthanc_studies(orthanc)
        # No new study: every object went into the study its sources came from. (Orthanc keys
        # studies by patient and Study Instance UID, so a changed Patient ID would show here.)
        assert set(in_pacs) == queued
        assert len(orthanc_get(orthanc, "/studies")) == len(queued)
        assert len(orthanc_get(orthanc, "/patients")) == len(
            {pydicom.dcmread(p, stop_before_pixels=True).PatientID for p in sources}
        )
        by_study: dict[str, list[pydicom.Dataset]] = {}
        for path in outputs:
            ds = pydicom.dcmread(path)
            by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
            errors, output = dciodvfy_errors(path)
            assert not errors, f"{path.name} ({ds.SOPClassUID.name}):\n{output}"
        assert set(by_study) == source_studies
        for study_uid, objects in by_study.items():
            uids = [str(ds.SOPInstanceUID) for ds in objects]
            assert set(uids) <= set(in_pacs[study_uid]["instances"])
            # Every image an object refers to is one the PACS holds in that same study.
            for ds in objects:
                referenced = referenced_images(ds)
                assert referenced, f"{ds.SOPClassUID.name} refers to no image"
                assert referenced <= set(in_pacs[study_uid]["instances"]) - set(uids)
            classes = Counter(ds.SOPClassUID.name for ds in objects)
            assert classes["Basic Text SR Storage"] == 1
            assert "SR" in in_pacs[study_uid]["modalities"]
            if classes["Grayscale Softcopy Presentation State Storage"]:
                assert "PR" in in_pacs[study_uid]["modalities"]

        narrative = [p for p in outputs if pydicom.dcmread(p).SOPClassUID == BasicTextSRStorage]
        assert len(narrative) == len(source_studies)
        for path in narrative:
            html = dsr2html(path)
            assert DISCLAIMER_ES in html
    finally:
        orthanc.stop()


def test_pacs_down_then_node_restarted_delivers_everything_once(
    make_node: Callable[..., ReceivingNode],
    report_engine: ReportEngine,
    dicom_dir: Path,
    tmp_path: Path,
) -> None:
    port = free_port()  # where the PACS will listen once it is up
    sections = {
        "delivery": {
            "destinations": [destination("pacs", "ORTHANC", port)],
            "max_attempts": 50,
            "backoff_initial_seconds": 0.2,
            "backoff_max_seconds": 0.5,
        }
    }
    data_dir = tmp_path / "data"
    node = make_node(data_dir, **sections)
    storescu(node.port, [dicom_dir / "siim_chest_cr_jpeg_baseline.dcm"])
    wait_until(lambda: all_in_state(node.sessions, StudyState.QUEUED, 1), "study queued")
    worker = ReportingWorker(node.config, node.sessions, report_engine, worker_id="e2e")
    assert drain(worker) == 1
    expected = {p.stem for p in output_files(data_dir)}
    assert expected

    # Transient failures: attempts grow with backoff, the rows stay pending.
    wait_until(
        lambda: all(r.attempts >= 2 for r in deliveries(node.sessions)),
        "two failed attempts per delivery",
    )
    rows = deliveries(node.sessions)
    assert {r.state for r in rows} == {DeliveryState.PENDING}
    assert all(r.last_status is None and r.last_error for r in rows)
    assert all(r.next_attempt_at > r.updated_at for r in rows)
    node.stop()

    orthanc = start_orthanc(tmp_path / "orthanc", dicom_port=port)
    try:
        restarted = make_node(data_dir, **sections)
        wait_until(lambda: delivered(restarted), "delivery after the restart")
        in_pacs = orthanc_studies(orthanc)
        assert len(in_pacs) == 1
        (study,) = in_pacs.values()
        # Each object stored exactly once (Orthanc keeps one copy per SOP Instance UID, so
        # compare with its count of received instances as well).
        assert sorted(study["instances"]) == sorted(expected)
        statistics = orthanc_get(orthanc, "/statistics")
        assert statistics["CountInstances"] == len(expected)
        rows = deliveries(restarted.sessions)
        assert len(rows) == len(expected)
        assert all(r.attempts >= 3 and r.last_status == 0 for r in rows)
        assert all(r.last_error is None for r in rows)
    finally:
        orthanc.stop()


@pytest.fixture(autouse=True)
def _quiet_pynetdicom(caplog: pytest.LogCaptureFixture) -> None:
    # Failed associations are expected here; pynetdicom logs each at ERROR.
    caplog.set_level("CRITICAL", logger="pynetdicom")
