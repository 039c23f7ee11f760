"""Deliveries through crashes and reopened studies: a claim expires on the timescale of the
destinations' timeouts, a restarted node takes its own claims back at once, each answer is
recorded as it comes, a superseded report is never sent again (``retry`` says why), the newer
SR names the older as its predecessor, and a slow run never makes APScheduler skip runs."""

from __future__ import annotations

import json
import logging
import threading
from argparse import Namespace
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomnode.cli import COMMANDS, main
from dicomnode.db import DeliveryState, StudyState, session_scope, utcnow
from dicomnode.delivery import _claim_due, claim_seconds, deliver_due, node_identity
from dicomnode.server import ReceivingNode
from dicomnode.worker import ReportEngine, ReportingWorker
from tests.node.conftest import renamed_copy, send_datasets
from tests.support.dicom_peers import dciodvfy_errors, free_port, start_status_scp

from .conftest import all_in_state, deliveries, destination, drain, wait_until

SMALL_FILE = "siim_chest_cr_jpeg_baseline.dcm"
SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
QUIET = {"check_interval_seconds": 3600}  # no scheduled run: the test drives deliveries


def view(ds: pydicom.Dataset, position: str) -> pydicom.Dataset:
    """``ds`` as a ``position`` view: a PA image sent later wins the engine's view selection
    over an AP one, so the reopened study's report is based on other images (new UIDs)."""
    ds.ViewPosition = position
    return ds


def report_one(node: ReceivingNode, engine: ReportEngine, datasets: list[pydicom.Dataset]) -> None:
    assert send_datasets(node.port, datasets) == [0] * len(datasets)
    wait_until(lambda: all_in_state(node.sessions, StudyState.QUEUED), "study queued")
    assert drain(ReportingWorker(node.config, node.sessions, engine, worker_id="w")) == 1


def test_claim_time_follows_the_destination_timeouts(
    make_node: Callable[..., ReceivingNode], report_engine: ReportEngine, dicom_dir: Path
) -> None:
    pacs = destination("pacs", "PACS", 9)
    pacs.update(connection_timeout=1.0, acse_timeout=2.0, dimse_timeout=3.0, network_timeout=2.5)
    node = make_node(delivery={"destinations": [pacs], **QUIET})
    report_one(node, report_engine, [renamed_copy(dicom_dir / SMALL_FILE, generate_uid())])
    # connect + associate + the longer of one response or idle network, plus one interval
    assert claim_seconds(node.config) == 1.0 + 2.0 + 3.0 + 3600
    fast = node.config.model_copy(
        update={"delivery": node.config.delivery.model_copy(update={"check_interval_seconds": 0.5})}
    )
    assert claim_seconds(fast) == 6.5
    before = utcnow()
    with session_scope(node.sessions) as session:
        rows = _claim_due(session, 10, "elsewhere:/data#dead", claim_seconds(fast))
        hidden = [r.next_attempt_at - before for r in rows]
    assert rows and all(timedelta(seconds=6) <= h <= timedelta(seconds=7.5) for h in hidden)
    explicit = fast.model_copy(
        update={"delivery": fast.delivery.model_copy(update={"claim_seconds": 2.0})}
    )
    assert claim_seconds(explicit) == 2.0


def test_a_restarted_node_resumes_its_own_claims_at_once(
    make_node: Callable[..., ReceivingNode],
    report_engine: ReportEngine,
    dicom_dir: Path,
    tmp_path: Path,
) -> None:
    pacs = start_status_scp(0x0000)
    try:
        sections = {"delivery": {"destinations": [destination("pacs", "STATUSSCP", pacs.port)]}}
        data_dir = tmp_path / "data"
        first = make_node(data_dir, delivery={**sections["delivery"], **QUIET})
        report_one(first, report_engine, [renamed_copy(dicom_dir / SMALL_FILE, generate_uid())])
        with session_scope(first.sessions) as session:
            # As a node killed mid-send leaves them: claimed by it, hidden, never answered.
            mine = _claim_due(session, 1, f"{node_identity(first.config)}#killed", 300)
            theirs = _claim_due(session, 10, "other-host:/srv/dicomnode#alive", 300)
            mine_ids, theirs_ids = [r.id for r in mine], [r.id for r in theirs]
        assert mine_ids and theirs_ids
        first.stop()
        second = make_node(data_dir, **sections)
        wait_until(
            lambda: all(
                r.state == DeliveryState.DELIVERED
                for r in deliveries(second.sessions)
                if r.id in mine_ids
            ),
            "the restarted node sending its own unfinished claims at once",
            timeout=10,
        )
        # Another node's live claim is left to it until it expires.
        rows = {r.id: r for r in deliveries(second.sessions)}
        assert all(rows[i].state == DeliveryState.PENDING for i in theirs_ids)
        assert all(rows[i].next_attempt_at > utcnow() + timedelta(seconds=200) for i in theirs_ids)
    finally:
        pacs.stop()


def test_each_answer_is_recorded_before_the_next_object_is_sent(
    make_node: Callable[..., ReceivingNode], report_engine: ReportEngine, dicom_dir: Path
) -> None:
    pacs = start_status_scp(0x0000, delay=0.8)
    try:
        node = make_node(
            delivery={"destinations": [destination("pacs", "STATUSSCP", pacs.port)], **QUIET}
        )
        report_one(node, report_engine, [renamed_copy(dicom_dir / SMALL_FILE, generate_uid())])
        assert len(deliveries(node.sessions)) >= 2
        run = threading.Thread(target=deliver_due, args=(node.sessions, node.config, node.data_dir))
        run.start()
        try:
            wait_until(lambda: len(pacs.received) >= 2, "the second C-STORE in flight")
            # A crash now must not resend the first object: its answer is already recorded.
            first = next(
                r for r in deliveries(node.sessions) if r.sop_instance_uid == pacs.received[0]
            )
            assert first.state == DeliveryState.DELIVERED and first.claimed_by is None
        finally:
            run.join(30)
    finally:
        pacs.stop()


def test_a_reopened_study_supersedes_dead_and_refused_drafts_which_retry_skips(
    make_node: Callable[..., ReceivingNode],
    report_engine: ReportEngine,
    dicom_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    refusing = start_status_scp(0xA700, "out of resources")
    try:
        node = make_node(
            delivery={
                "destinations": [
                    destination("refusing", "STATUSSCP", refusing.port),
                    destination("down", "DOWN", free_port()),
                ],
                "max_attempts": 1,
                **QUIET,
            }
        )
        study_uid = generate_uid()
        first = view(renamed_copy(dicom_dir / SMALL_FILE, study_uid), "AP")
        report_one(node, report_engine, [first])
        deliver_due(node.sessions, node.config, node.data_dir)
        old = {r.id: r for r in deliveries(node.sessions)}
        assert {r.state for r in old.values()} == {DeliveryState.REFUSED, DeliveryState.DEAD}
        old_srs = {
            r.sop_instance_uid for r in old.values() if r.sop_class_uid.startswith(SR_PREFIX)
        }

        # The study is reopened by a later image and reported again.
        report_one(
            node, report_engine, [view(renamed_copy(dicom_dir / SMALL_FILE, study_uid), "PA")]
        )
        rows = {r.id: r for r in deliveries(node.sessions)}
        assert all(rows[i].state == DeliveryState.SUPERSEDED for i in old)
        assert all(rows[i].superseded_at is not None for i in old)
        new = [r for i, r in rows.items() if i not in old]
        assert new and {r.state for r in new} == {DeliveryState.PENDING}

        # The newer SRs name every older draft as a predecessor, and stay valid objects.
        for row in new:
            if not row.sop_class_uid.startswith(SR_PREFIX):
                continue
            path = node.data_dir / row.path
            ds = pydicom.dcmread(path)
            (item,) = ds.PredecessorDocumentsSequence
            assert item.StudyInstanceUID == study_uid
            named = {
                ref.ReferencedSOPInstanceUID
                for series in item.ReferencedSeriesSequence
                for ref in series.ReferencedSOPSequence
            }
            assert named == old_srs
            errors, output = dciodvfy_errors(path)
            assert not errors, output

        # retry never sends them, and says why.
        retry = COMMANDS["retry"]
        capsys.readouterr()
        assert retry(node.config, Namespace(ids=sorted(old))) == 0
        out = capsys.readouterr().out
        for row_id in old:
            assert f"#{row_id} not sent: superseded at" in out
        assert "0 delivery(ies) queued again" in out
        assert retry(node.config, Namespace(ids=[])) == 0
        assert f"{len(old)} superseded delivery(ies) not sent" in capsys.readouterr().out
        assert all(
            r.state == DeliveryState.SUPERSEDED for r in deliveries(node.sessions) if r.id in old
        )
        refused_before = len(refusing.received)
        deliver_due(node.sessions, node.config, node.data_dir)
        sent_now = set(refusing.received[refused_before:])
        assert sent_now and not sent_now & {r.sop_instance_uid for r in old.values()}

        # status lists them as superseded, apart from the deliveries needing attention.
        config = tmp_path / "node.toml"
        config.write_text(f'[node]\ndata_dir = "{node.data_dir}"\n', "utf-8")
        capsys.readouterr()
        assert main(["--config", str(config), "status", "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["deliveries"][DeliveryState.SUPERSEDED] == len(old)
        assert {d["id"] for d in status["superseded_deliveries"]} == set(old)
        assert not {d["id"] for d in status["failed_deliveries"]} & set(old)
        assert main(["--config", str(config), "status"]) == 0
        assert "superseded (a newer report of the study replaced them" in capsys.readouterr().out
    finally:
        refusing.stop()


def test_a_delivery_run_longer_than_its_interval_is_not_skipped_with_warnings(
    make_node: Callable[..., ReceivingNode],
    report_engine: ReportEngine,
    dicom_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="apscheduler")
    pacs = start_status_scp(0x0000, delay=0.7)
    try:
        node = make_node(
            delivery={
                "destinations": [destination("pacs", "STATUSSCP", pacs.port)],
                "check_interval_seconds": 0.1,
            }
        )
        report_one(node, report_engine, [renamed_copy(dicom_dir / SMALL_FILE, generate_uid())])
        count = len(deliveries(node.sessions))
        assert count >= 2  # the run takes count x 0.7 s: several intervals
        wait_until(
            lambda: {r.state for r in deliveries(node.sessions)} == {DeliveryState.DELIVERED},
            "every object delivered",
        )
    finally:
        pacs.stop()
    assert "maximum number of running instances" not in caplog.text
    assert sorted(pacs.received) == sorted(set(pacs.received))  # each object sent once
