"""The fault suite: the listener and three workers as separate processes on PostgreSQL,
delivering to Orthanc, while a seeded chaos thread SIGKILLs workers and the listener at random
points and cuts the database off for seconds at a time; the PACS is stopped for a while too.
Every study is reopened by a later image at one stage of its life: while it is being
reported, after its draft was delivered, while its delivery is pending, and after it went to
the dead letters.

Then, with no manual action (no retry, no requeue), the PACS must hold exactly one current
draft per study, naming each older draft there as its predecessor; no object may have been
sent after it was superseded; and no delivery may have stayed hidden by a claim for longer
than the configured claim time.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import BasicTextSRStorage, generate_uid
from sqlalchemy import func, select

from dicomnode.config import load_config
from dicomnode.db import (
    Delivery,
    DeliveryState,
    Instance,
    Study,
    StudyState,
    create_db_engine,
    create_session_factory,
    session_scope,
    utcnow,
)
from dicomnode.delivery import claim_seconds
from engine.artifact import EngineArtifact
from tests.conftest import REPO_ROOT
from tests.node.conftest import renamed_copy, send_datasets
from tests.support.dicom_peers import Peer, free_port, orthanc_get, start_orthanc

from .conftest import wait_until
from .faults import TcpProxy, proxied_url

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SEED = int(os.environ.get("CXR_FAULT_SEED", "15"))
WORKERS = 3
SIIM = "siim_chest_cr_jpeg_baseline.dcm"
SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def write_config(path: Path, data_dir: Path, db_url: str, port: int, pacs_port: int) -> Path:
    path.write_text(
        f"""
[node]
bind_address = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
database_url = "{db_url}"
min_free_disk_mb = 0

[stability]
window_seconds = 0.5
check_interval_seconds = 0.2

[delivery]
max_attempts = 6
backoff_initial_seconds = 0.5
backoff_max_seconds = 2.0
check_interval_seconds = 0.5

[[delivery.destinations]]
name = "pacs"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {pacs_port}
connection_timeout = 2.0
acse_timeout = 3.0
dimse_timeout = 5.0
network_timeout = 5.0

[engine]
lease_seconds = 3.0
heartbeat_seconds = 0.5
batch_size = 1

[worker]
db_retry_initial_seconds = 0.2
db_retry_max_seconds = 1.0

[retention]
keep_days = 0
""",
        "utf-8",
    )
    return path


@dataclass
class Cluster:
    """The node's processes, killed and restarted at will."""

    config: Path
    artifact: Path
    logs: Path
    port: int
    listener: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    starts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        self.starts += 1
        log = (self.logs / f"{name}.log").open("ab")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)

    def start_listener(self) -> None:
        self.listener = self._spawn(
            [sys.executable, "-m", "dicomnode.cli", "--config", str(self.config), "serve"],
            "listener",
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.listener.poll() is None, "the listener exited at start-up"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError("the listener did not start listening")

    def start_worker(self, index: int, seed: int) -> None:
        args = [sys.executable, "-m", "tests.e2e.fault_worker", str(self.config)]
        proc = self._spawn([*args, str(self.artifact), str(seed), "2.0"], f"worker{index}")
        if index < len(self.workers):
            self.workers[index] = proc
        else:
            self.workers.append(proc)

    @staticmethod
    def kill(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        for proc in [self.listener, *self.workers]:
            self.kill(proc)


@dataclass
class Chaos:
    """Seeded random faults until stopped: SIGKILL a worker or the listener (restarted after a
    moment, as systemd would), or cut the database off for a few seconds."""

    cluster: Cluster
    proxy: TcpProxy
    rng: random.Random
    events: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        try:
            while not self.stop.wait(self.rng.uniform(1.0, 3.0)):
                action = self.rng.choice(["worker", "worker", "listener", "database"])
                with self.cluster.lock:
                    if action == "worker":
                        index = self.rng.randrange(WORKERS)
                        self.events.append(f"kill worker {index}")
                        Cluster.kill(self.cluster.workers[index])
                        time.sleep(self.rng.uniform(0, 1))
                        self.cluster.start_worker(index, self.rng.randrange(1 << 30))
                    elif action == "listener":
                        self.events.append("kill listener")
                        Cluster.kill(self.cluster.listener)
                        time.sleep(self.rng.uniform(0, 1))
                        self.cluster.start_listener()
                    else:
                        seconds = self.rng.uniform(1.0, 3.0)
                        self.events.append(f"database down {seconds:.1f} s")
                        self.proxy.cut()
                        time.sleep(seconds)
                        self.proxy.restore()
        except BaseException as exc:
            self.errors.append(exc)


@dataclass
class ClaimMonitor:
    """Samples the deliveries table: how long each claim kept its row hidden."""

    sessions: Any
    seen: dict[tuple[int, str], tuple[float, float]] = field(default_factory=dict)
    longest_hidden: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                with session_scope(self.sessions) as session:
                    rows = session.execute(
                        select(Delivery.id, Delivery.claimed_by, Delivery.next_attempt_at).where(
                            Delivery.state == DeliveryState.PENDING,
                            Delivery.claimed_by.is_not(None),
                        )
                    ).all()
            except Exception:
                continue
            now, clock = utcnow(), time.monotonic()
            for row_id, token, until in rows:
                self.longest_hidden = max(self.longest_hidden, (until - now).total_seconds())
                first, _ = self.seen.get((row_id, token), (clock, clock))
                self.seen[(row_id, token)] = (first, clock)

    def longest_claim(self) -> float:
        return max((last - first for first, last in self.seen.values()), default=0.0)


def send(port: int, datasets: list[pydicom.Dataset]) -> None:
    """Send as a modality does: again until the node acknowledges (it may be restarting)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if send_datasets(port, datasets) == [0] * len(datasets):
                return
        except (AssertionError, OSError, RuntimeError):
            pass
        assert time.monotonic() < deadline, "the node never acknowledged the images"
        time.sleep(0.3)


def view(path: Path, study_uid: str, position: str) -> pydicom.Dataset:
    # A later PA image wins the engine's view selection over an earlier AP one, so the
    # reopened study's report is based on other images and has new UIDs.
    ds = renamed_copy(path, study_uid)
    ds.ViewPosition = position
    return ds


def rows_of(sessions: Any, study_uid: str) -> list[Delivery]:
    with session_scope(sessions) as session:
        return list(
            session.scalars(
                select(Delivery)
                .join(Study)
                .where(Study.study_instance_uid == study_uid)
                .order_by(Delivery.id)
            )
        )


def newer_draft_delivered(sessions: Any, study_uid: str) -> bool:
    """Reported again after the reopening (PA) image, and every object delivered or superseded.

    A draft built after the image arrived is what counts: when the image lands while the first
    report is being written, the worker drops that report unsent and reports once more, so the
    study may have only one draft, not two.
    """
    with session_scope(sessions) as session:
        reopened = session.scalar(
            select(func.max(Instance.received_at))
            .join(Study)
            .where(Study.study_instance_uid == study_uid, Instance.view_position == "PA")
        )
    rows = rows_of(sessions, study_uid)
    return (
        reopened is not None
        and study_state(sessions, study_uid) == StudyState.REPORTED
        and all(r.state in (DeliveryState.DELIVERED, DeliveryState.SUPERSEDED) for r in rows)
        and any(r.state == DeliveryState.DELIVERED and r.created_at > reopened for r in rows)
    )


def study_state(sessions: Any, study_uid: str) -> str | None:
    with session_scope(sessions) as session:
        return session.scalar(select(Study.state).where(Study.study_instance_uid == study_uid))


def orthanc_instances(peer: Peer) -> dict[str, list[tuple[pydicom.Dataset, datetime]]]:
    """Every SR in Orthanc by study, with its reception time."""
    found: dict[str, list[tuple[pydicom.Dataset, datetime]]] = defaultdict(list)
    assert peer.rest_url is not None
    for instance_id in orthanc_get(peer, "/instances"):
        with urllib.request.urlopen(f"{peer.rest_url}/instances/{instance_id}/file") as r:
            ds = pydicom.dcmread(BytesIO(r.read()))
        if not str(ds.SOPClassUID).startswith(SR_PREFIX):
            continue
        url = f"{peer.rest_url}/instances/{instance_id}/metadata/ReceptionDate"
        with urllib.request.urlopen(url) as r:
            received = datetime.strptime(r.read().decode(), "%Y%m%dT%H%M%S")
        found[str(ds.StudyInstanceUID)].append((ds, received))
    return found


def predecessors_of(ds: pydicom.Dataset) -> set[str]:
    return {
        ref.ReferencedSOPInstanceUID
        for item in ds.get("PredecessorDocumentsSequence", [])
        for series in item.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }


def test_exactly_one_current_draft_in_the_pacs_whatever_fails(
    postgres_url: str, tiny_artifact: EngineArtifact, dicom_dir: Path, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    pg = create_db_engine(postgres_url)
    proxy = TcpProxy(pg.url.host or "127.0.0.1", pg.url.port or 5432)
    pacs_port, node_port = free_port(), free_port()
    config_path = write_config(
        tmp_path / "node.toml",
        tmp_path / "data",
        proxied_url(postgres_url, proxy),
        node_port,
        pacs_port,
    )
    claim_limit = claim_seconds(load_config(config_path))
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = Cluster(config_path, Path(tiny_artifact.root), logs, node_port)
    orthanc = start_orthanc(tmp_path / "orthanc", dicom_port=pacs_port)
    sessions = create_session_factory(pg)
    chaos = Chaos(cluster, proxy, rng)
    monitor = ClaimMonitor(sessions)
    threads = [threading.Thread(target=chaos.run), threading.Thread(target=monitor.run)]
    source = dicom_dir / SIIM
    stages: dict[str, str] = {}
    try:
        cluster.start_listener()
        for i in range(WORKERS):
            cluster.start_worker(i, rng.randrange(1 << 30))
        for t in threads:
            t.start()

        def reopen(stage: str, study_uid: str) -> None:
            stages[study_uid] = stage
            send(cluster.port, [view(source, study_uid, "PA")])

        def all_delivered(study_uid: str) -> bool:
            rows = rows_of(sessions, study_uid)
            return bool(rows) and all(r.state == DeliveryState.DELIVERED for r in rows)

        # Reopened while being reported, and after its draft was delivered.
        reporting, delivered = generate_uid(), generate_uid()
        send(cluster.port, [view(source, reporting, "AP"), view(source, delivered, "AP")])
        wait_until(
            lambda: study_state(sessions, reporting) == StudyState.REPORTING,
            "a study being reported",
            timeout=90,
        )
        reopen("reporting", reporting)
        wait_until(lambda: all_delivered(delivered), "the first draft delivered", timeout=90)
        reopen("delivered", delivered)
        for uid in (reporting, delivered):
            wait_until(
                lambda uid=uid: newer_draft_delivered(sessions, uid),
                f"the newer draft of {uid} delivered",
                timeout=90,
            )

        # The PACS stops: one study's draft goes to the dead letters, another's waits.
        orthanc.stop()
        dead, pending = generate_uid(), generate_uid()
        send(cluster.port, [view(source, dead, "AP")])
        wait_until(
            lambda: (
                (rows := rows_of(sessions, dead))
                and all(r.state == DeliveryState.DEAD for r in rows)
            ),
            "a draft in the dead letters",
            timeout=90,
        )
        send(cluster.port, [view(source, pending, "AP")])
        wait_until(
            lambda: (
                (rows := rows_of(sessions, pending))
                and all(r.state == DeliveryState.PENDING and r.attempts >= 1 for r in rows)
            ),
            "a draft waiting for the PACS",
            timeout=90,
        )
        reopen("dead letter", dead)
        reopen("pending", pending)
        orthanc = start_orthanc(tmp_path / "orthanc", dicom_port=pacs_port)

        time.sleep(rng.uniform(2, 5))  # some more chaos after the PACS is back
        chaos.stop.set()
        threads[0].join(60)
        assert not chaos.errors, chaos.errors

        # No manual action: everything must settle by itself.
        def settled() -> bool:
            for uid in stages:
                rows = rows_of(sessions, uid)
                if study_state(sessions, uid) != StudyState.REPORTED or not rows:
                    return False
                if any(
                    r.state not in (DeliveryState.DELIVERED, DeliveryState.SUPERSEDED) for r in rows
                ):
                    return False
            return True

        wait_until(settled, "every study reported and its current draft delivered", timeout=120)
        monitor.stop.set()
        threads[1].join(10)

        in_pacs = orthanc_instances(orthanc)
        superseded_at: dict[str, datetime] = {}
        for uid in stages:
            for row in rows_of(sessions, uid):
                if row.state == DeliveryState.SUPERSEDED and row.superseded_at is not None:
                    superseded_at[row.sop_instance_uid] = row.superseded_at
        for uid, stage in stages.items():
            drafts = in_pacs[uid]
            uids = {str(ds.SOPInstanceUID) for ds, _ in drafts}
            named = set().union(*(predecessors_of(ds) for ds, _ in drafts))
            current = [
                ds
                for ds, _ in drafts
                if str(ds.SOPInstanceUID) not in named and ds.SOPClassUID == BasicTextSRStorage
            ]
            assert len(current) == 1, f"{stage}: {len(current)} current drafts of {uid}"
            newest = {
                str(ds.SOPInstanceUID) for ds, _ in drafts if str(ds.SOPInstanceUID) not in named
            }
            for ds, _ in drafts:
                if str(ds.SOPInstanceUID) in named:
                    continue
                # The current report's documents name every older draft the PACS holds.
                assert uids - newest <= predecessors_of(ds), f"{stage}: an older draft unlinked"
            expected = {
                r.sop_instance_uid
                for r in rows_of(sessions, uid)
                if r.state == DeliveryState.DELIVERED and r.sop_class_uid.startswith(SR_PREFIX)
            }
            assert newest <= expected
            for ds, received in drafts:
                when = superseded_at.get(str(ds.SOPInstanceUID))
                if when is not None:
                    # Orthanc records reception to the second.
                    assert received <= when.replace(tzinfo=None) + timedelta(seconds=1), (
                        f"{stage}: {ds.SOPInstanceUID} sent after it was superseded"
                    )
        assert set(stages.values()) == {"reporting", "delivered", "dead letter", "pending"}
        assert monitor.longest_hidden <= claim_limit + 1.0
        assert monitor.longest_claim() <= claim_limit + 1.0
        with session_scope(sessions) as session:
            assert not session.scalars(select(Study).where(Study.state == StudyState.FAILED)).all()
        print(
            f"chaos (seed {SEED}): {chaos.events}; {cluster.starts} process starts; longest "
            f"claim {monitor.longest_claim():.1f} s of {claim_limit:.1f} s allowed"
        )
    except BaseException:
        for log in sorted(logs.glob("*.log")):
            print(f"==== {log.name}\n{log.read_text('utf-8', 'replace')[-6000:]}")
        print(f"chaos events: {chaos.events}")
        raise
    finally:
        chaos.stop.set()
        monitor.stop.set()
        for t in threads:
            if t.is_alive():
                t.join(60)
        cluster.stop()
        orthanc.stop()
        proxy.close()
        pg.dispose()
