"""The reporting worker against a live node: a broken study among good ones, a worker that dies
holding a lease, a study that changes while it is being reported, and the ``worker`` command
refusing to run without a trained engine."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomnode.cli import main
from dicomnode.db import StudyState
from dicomnode.server import ReceivingNode
from dicomnode.worker import MAX_STUDY_ATTEMPTS, ReportEngine, ReportingWorker
from engine.artifact import EngineArtifact
from engine.exceptions import StudyError
from engine.result import StudyReport
from tests.node.conftest import renamed_copy, send_datasets

from .conftest import deliveries, destination, drain, output_files, studies, wait_until

SIIM = "siim_chest_cr_jpeg_baseline.dcm"
UNDELIVERED = {
    # Deliveries are queued but never sent here: nothing listens and no run is due.
    "delivery": {
        "destinations": [destination("pacs", "PACS", 9)],
        "check_interval_seconds": 3600,
    }
}


class PausingEngine:
    """The real engine, held at the start of ``report_studies`` until released: stands in
    for a worker that is slow, hung or about to be killed while it holds a lease."""

    def __init__(self, engine: ReportEngine) -> None:
        self.engine = engine
        self.entered = threading.Event()
        self.release = threading.Event()

    def report_studies(
        self, studies: Sequence[Sequence[Dataset]], *, return_exceptions: bool
    ) -> list[StudyReport | StudyError]:
        self.entered.set()
        assert self.release.wait(30), "the test never released the engine"
        return self.engine.report_studies(studies, return_exceptions=return_exceptions)


def queued(node: ReceivingNode, count: int) -> None:
    wait_until(
        lambda: [s.state for s in studies(node.sessions).values()].count(StudyState.QUEUED)
        == count,
        f"{count} studies queued",
    )


def undecodable_pixels(path: Path) -> Dataset:
    """A copy of a JPEG file in a new study whose one fragment holds garbage, not a JPEG
    stream: well-formed enough for the node to accept (a cut-short data set is refused at
    the door, 0xC210), undecodable for the engine."""
    from pydicom.encaps import encapsulate

    ds = renamed_copy(path, study_uid=generate_uid())
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x5a" * 1000 + b"\xff\xd9"])
    return ds


def test_undecodable_study_fails_alone_and_the_worker_goes_on(
    make_node: Callable[..., ReceivingNode], report_engine: ReportEngine, dicom_dir: Path
) -> None:
    node = make_node(engine={"batch_size": 4}, **UNDELIVERED)
    bad = undecodable_pixels(dicom_dir / SIIM)
    good = [renamed_copy(dicom_dir / SIIM, study_uid=generate_uid()) for _ in range(2)]
    assert send_datasets(node.port, [good[0], bad, good[1]]) == [0, 0, 0]
    queued(node, 3)
    worker = ReportingWorker(node.config, node.sessions, report_engine, worker_id="w")
    assert worker.process_once() == 3  # one batch, the broken study in the middle

    found = studies(node.sessions)
    failed = found[bad.StudyInstanceUID]
    assert failed.state == StudyState.FAILED
    assert failed.error and "pixel" in failed.error.lower()
    assert failed.lease_owner is None
    for ds in good:
        assert found[ds.StudyInstanceUID].state == StudyState.REPORTED
        assert found[ds.StudyInstanceUID].error is None
    assert not (node.data_dir / "outputs" / bad.StudyInstanceUID).exists()
    assert {d.study_id for d in deliveries(node.sessions)} == {
        found[ds.StudyInstanceUID].id for ds in good
    }

    # The worker goes on with the next study.
    later = renamed_copy(dicom_dir / SIIM, study_uid=generate_uid())
    send_datasets(node.port, [later])
    queued(node, 1)
    assert drain(worker) == 1
    assert studies(node.sessions)[later.StudyInstanceUID].state == StudyState.REPORTED


def test_expired_lease_is_redone_with_the_same_uids_and_the_late_result_dropped(
    make_node: Callable[..., ReceivingNode],
    report_engine: ReportEngine,
    dicom_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A hung engine: the heartbeat gives up after max_report_seconds, then the lease lapses.
    node = make_node(engine={"lease_seconds": 2.0, "max_report_seconds": 1.0}, **UNDELIVERED)
    send_datasets(node.port, [renamed_copy(dicom_dir / SIIM, study_uid=generate_uid())])
    queued(node, 1)
    paused = PausingEngine(report_engine)
    worker_a = ReportingWorker(node.config, node.sessions, paused, worker_id="A")
    thread = threading.Thread(target=worker_a.process_once)
    thread.start()
    try:
        assert paused.entered.wait(30)
        (held,) = studies(node.sessions).values()
        assert (held.state, held.lease_owner, held.attempts) == (StudyState.REPORTING, "A", 1)
        # While A's lease holds, nobody else may take the study.
        worker_b = ReportingWorker(node.config, node.sessions, report_engine, worker_id="B")
        assert worker_b.process_once() == 0
        wait_until(lambda: worker_b.process_once() == 1, "B redoing the study after expiry")
        written_by_b = {p.name: p.read_bytes() for p in output_files(node.data_dir)}
        rows = deliveries(node.sessions)
        assert written_by_b
        assert {f"{r.sop_instance_uid}.dcm" for r in rows} == set(written_by_b)
    finally:
        paused.release.set()
        thread.join(30)
    (study,) = studies(node.sessions).values()
    assert study.state == StudyState.REPORTED
    assert study.lease_owner is None and study.lease_expires_at is None
    assert study.attempts == 0  # a result ends the round of claims
    assert "held by A expired; redoing it" in caplog.text
    assert "lost the lease" in caplog.text
    # A finished late on the same images: its objects carry B's UIDs (no new file), what B
    # queued for delivery is left as it was, and A's result was dropped (no new rows).
    assert {p.name: p.read_bytes() for p in output_files(node.data_dir)} == written_by_b
    assert [(r.id, r.sop_instance_uid) for r in deliveries(node.sessions)] == [
        (r.id, r.sop_instance_uid) for r in rows
    ]


def test_new_instance_while_reporting_sends_the_study_round_again(
    make_node: Callable[..., ReceivingNode], report_engine: ReportEngine, dicom_dir: Path
) -> None:
    node = make_node(**UNDELIVERED)
    study_uid = generate_uid()
    send_datasets(node.port, [renamed_copy(dicom_dir / SIIM, study_uid=study_uid)])
    queued(node, 1)
    paused = PausingEngine(report_engine)
    worker = ReportingWorker(node.config, node.sessions, paused, worker_id="w")
    thread = threading.Thread(target=worker.process_once)
    thread.start()
    try:
        assert paused.entered.wait(30)
        second = renamed_copy(dicom_dir / "rg1_chest_cr_uncompressed.dcm", study_uid=study_uid)
        assert send_datasets(node.port, [second]) == [0]
        assert studies(node.sessions)[study_uid].state == StudyState.REPORTING
    finally:
        paused.release.set()
        thread.join(30)
    study = studies(node.sessions)[study_uid]
    # The report covered one image of two: dropped, the study waits for stability again.
    assert study.state in (StudyState.RECEIVED, StudyState.QUEUED)
    assert deliveries(node.sessions) == []
    queued(node, 1)
    assert drain(worker) == 1
    study = studies(node.sessions)[study_uid]
    assert (study.state, study.instance_count) == (StudyState.REPORTED, 2)
    assert deliveries(node.sessions)


def test_worker_command_refuses_without_a_trained_engine(
    tmp_path: Path, tiny_artifact: EngineArtifact, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "node.toml"
    node = f'[node]\ndata_dir = "{tmp_path / "data"}"\n'
    config.write_text(node + '[engine]\nartifact = ""\n', "utf-8")  # "": no engine
    assert main(["--config", str(config), "worker"]) == 2
    err = capsys.readouterr().err
    assert "engine.artifact is not set" in err and "Traceback" not in err

    # The random-weight test engine must never report on patients, even if configured.
    config.write_text(node + f'[engine]\nartifact = "{tiny_artifact.root}"\n', "utf-8")
    assert main(["--config", str(config), "worker"]) == 2
    err = capsys.readouterr().err
    assert "test artifact" in err and "random" in err
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.dcm"))



def test_a_study_reopened_many_times_is_reported_each_time(
    make_node: Callable[..., ReceivingNode], report_engine: ReportEngine, dicom_dir: Path
) -> None:
    # Images of one study trickling in over time (each batch after the stability window):
    # every revision is a new report, not another attempt at the old one.
    node = make_node(**UNDELIVERED)
    study_uid = generate_uid()
    worker = ReportingWorker(node.config, node.sessions, report_engine, worker_id="w")
    for round_ in range(1, 6):
        send_datasets(node.port, [renamed_copy(dicom_dir / SIIM, study_uid=study_uid)])
        queued(node, 1)
        assert drain(worker) == 1
        study = studies(node.sessions)[study_uid]
        assert (study.state, study.instance_count) == (StudyState.REPORTED, round_), study.error


class CrashingEngine:
    """An engine whose backend fails on every batch (e.g. the GPU ran out of memory)."""

    def report_studies(
        self, studies: Sequence[Sequence[Dataset]], *, return_exceptions: bool
    ) -> list[StudyReport | StudyError]:
        raise RuntimeError("CUDA error: out of memory")


def test_engine_crashes_requeue_then_fail_the_study_with_the_reason(
    make_node: Callable[..., ReceivingNode], dicom_dir: Path
) -> None:
    node = make_node(**UNDELIVERED)
    study_uid = generate_uid()
    send_datasets(node.port, [renamed_copy(dicom_dir / SIIM, study_uid=study_uid)])
    queued(node, 1)
    worker = ReportingWorker(node.config, node.sessions, CrashingEngine(), worker_id="w")
    for attempt in range(1, MAX_STUDY_ATTEMPTS + 1):
        assert worker.process_once() == 1
        study = studies(node.sessions)[study_uid]
        assert (study.state, study.attempts) == (StudyState.QUEUED, attempt)
        assert "out of memory" in (study.error or "")
    assert worker.process_once() == 0
    study = studies(node.sessions)[study_uid]
    assert study.state == StudyState.FAILED
    assert f"no result after {MAX_STUDY_ATTEMPTS} attempts" in (study.error or "")
    assert "out of memory" in (study.error or "")
    assert deliveries(node.sessions) == []
