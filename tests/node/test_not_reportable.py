"""A study the engine was not made for gets its own state, ``not_reportable``: the reason kept,
no report object written, not a failure, and an operator may requeue it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicomnode.cli import main
from dicomnode.db import Study, StudyState, session_scope, utcnow
from dicomnode.server import ReceivingNode
from dicomnode.studies import claim, refuse, requeue
from dicomnode.worker import ReportingWorker
from engine.exceptions import ImageRejectedError, PixelDecodeError, StudyError
from engine.result import StudyReport
from tests.node.conftest import renamed_copy, send_datasets


class RefusingEngine:
    """Answers each study as the engine's gate and view selection would for non-chest input
    (the engine itself is exercised on the real canine study in tests/e2e)."""

    def __init__(self, errors: Sequence[StudyError]) -> None:
        self.errors = list(errors)

    def report_studies(
        self, studies: Sequence[Sequence[Dataset]], *, return_exceptions: bool
    ) -> list[StudyReport | StudyError]:
        return [self.errors.pop(0) for _ in studies]


def test_refuse_keeps_the_reason_and_requeue_takes_it_back() -> None:
    study = Study(study_instance_uid="1.2.3", state=StudyState.QUEUED, reportable=True)
    study.attempts, study.requeue_count = 1, 0
    claim(study, "w1", utcnow() + timedelta(minutes=1))
    refuse(study, "not a chest radiograph")
    assert (study.state, study.error, study.lease_owner) == (
        "not_reportable",
        "not a chest radiograph",
        None,
    )
    requeue(study)
    assert (study.state, study.error, study.requeue_count) == ("queued", None, 1)


def test_worker_maps_the_gate_refusal_to_not_reportable_and_failures_to_failed(
    start_node: Callable[..., ReceivingNode],
    dicom_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    node = start_node(stability={"window_seconds": 0.1, "check_interval_seconds": 0.1})
    refused_uid, failed_uid = generate_uid(), generate_uid()
    for uid in (refused_uid, failed_uid):
        ds = renamed_copy(dicom_dir / "siim_chest_cr_jpeg_baseline.dcm", uid)
        assert send_datasets(node.port, [ds]) == [0]
    engine = RefusingEngine(
        [
            ImageRejectedError("a colour document page", reason="colour_document"),
            PixelDecodeError("truncated pixel data"),
        ]
    )
    worker = ReportingWorker(node.config, node.sessions, engine, worker_id="w")
    deadline = utcnow() + timedelta(seconds=30)
    handled = 0
    while handled < 2 and utcnow() < deadline:
        handled += worker.process_once()
    assert handled == 2
    with session_scope(node.sessions) as session:
        found = {s.study_instance_uid: s for s in session.scalars(select(Study))}
    order = sorted(found.values(), key=lambda s: s.last_instance_at)
    refused, failed = order
    assert (refused.state, refused.error) == ("not_reportable", "a colour document page")
    assert (failed.state, failed.error) == ("failed", "truncated pixel data")
    assert refused.attempts == 0
    assert not (node.data_dir / "outputs").exists()

    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{node.data_dir}"\n')
    assert main(["--config", str(config), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["studies"] == {"not_reportable": 1, "failed": 1}
    assert [(s["study_instance_uid"], s["reason"]) for s in status["not_reportable_studies"]] == [
        (refused.study_instance_uid, "a colour document page")
    ]
    assert main(["--config", str(config), "status"]) == 0
    text = capsys.readouterr().out
    assert "not reportable" in text and "a colour document page" in text
    assert main(["--config", str(config), "show", refused.study_instance_uid]) == 0
    shown = capsys.readouterr().out
    assert "not_reportable" in shown and "a colour document page" in shown
    assert "No report written" in shown
    assert main(["--config", str(config), "requeue", refused.study_instance_uid]) == 0
    capsys.readouterr()
    with session_scope(node.sessions) as session:
        state = session.scalar(
            select(Study.state).where(Study.study_instance_uid == refused.study_instance_uid)
        )
    assert state == StudyState.QUEUED
