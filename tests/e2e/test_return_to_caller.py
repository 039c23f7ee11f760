"""Destinations with ``receives = "own"``: reports go back to the AE that sent the study,
and never to another sender."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dicomnode.db import StudyState
from dicomnode.server import ReceivingNode
from dicomnode.worker import ReportEngine, ReportingWorker

from .conftest import all_in_state, deliveries, destination, drain, storescu, wait_until


def test_reports_go_back_only_to_the_study_sender(
    make_node: Callable[..., ReceivingNode], report_engine: ReportEngine, dicom_dir: Path
) -> None:
    node = make_node(
        delivery={
            "destinations": [
                destination("pacs", "PACS", 9),
                {**destination("room-a", "MODALA", 9), "receives": "own"},
                {**destination("room-b", "MODALB", 9), "receives": "own"},
            ],
            "check_interval_seconds": 3600,  # only the queued rows matter here
        }
    )
    storescu(node.port, [dicom_dir / "siim_chest_cr_jpeg_baseline.dcm"], calling_ae="MODALA")
    wait_until(lambda: all_in_state(node.sessions, StudyState.QUEUED, 1), "study queued")
    assert drain(ReportingWorker(node.config, node.sessions, report_engine)) == 1
    assert {r.destination for r in deliveries(node.sessions)} == {"pacs", "room-a"}
