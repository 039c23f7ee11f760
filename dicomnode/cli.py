"""``dicomnode``: the command-line interface of the reporting node."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from dicomnode import __version__
from dicomnode.config import Config, load_config
from dicomnode.db import (
    Delivery,
    DeliveryState,
    InstanceVersion,
    QuarantineEntry,
    Study,
    StudyState,
    WorkerRecord,
    check_schema,
    create_db_engine,
    create_session_factory,
    migrate_database,
    session_scope,
    utcnow,
)
from dicomnode.exceptions import DicomNodeError
from dicomnode.studies import count_by_state
from dicomnode.wakeups import QUEUED_CHANNEL, REPORTED_CHANNEL, notify
from engine.exceptions import EngineError

logger = logging.getLogger(__name__)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # pynetdicom narrates every PDU at INFO; keep its warnings and errors only.
    if level.upper() != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        # highdicom narrates every module it copies into a report at INFO.
        logging.getLogger("highdicom").setLevel(logging.WARNING)


def _serve_engine(config: Config) -> Any:
    """The engine ``serve`` runs in its own worker thread, or ``None`` (said once, why)."""
    if config.engine.artifact is None:
        logger.warning(
            "no engine configured (engine.artifact is not set): studies are received and "
            "queued, and reported once an engine is configured"
        )
        return None
    if not config.worker.in_serve:
        logger.info(
            "worker.in_serve = false: queued studies are reported by `dicomnode worker` units"
        )
        return None
    return _configured_engine(config)


def _cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from dicomnode.server import ReceivingNode

    engine = _serve_engine(config)
    node = ReceivingNode(config, engine)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        logger.info("signal %d received, stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    node.start()
    reporting = (
        f"reporting with {engine.identity.name} {engine.identity.version}"
        if engine is not None
        else "not reporting (no engine in this process)"
    )
    print(
        f"dicomnode {__version__}: {config.node.ae_title} listening on "
        f"{config.node.bind_address}:{node.port} (data in {node.data_dir}), {reporting}; "
        "Ctrl-C stops",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        node.stop()
    return 0


def _configured_engine(config: Config) -> Any:
    """The engine ``engine.artifact`` names, on the configured backend."""
    from engine.runtime import create_engine

    if config.engine.artifact is None:
        raise DicomNodeError(
            "engine.artifact is not set: point it at a trained engine artifact "
            "(the node keeps receiving and queueing studies until a worker runs)"
        )
    return create_engine(
        config.engine.artifact, backend=config.engine.backend, max_batch=config.engine.batch_size
    )


def _cmd_worker(config: Config, args: argparse.Namespace) -> int:
    from dicomnode.worker import ReportingWorker

    engine = _configured_engine(config)
    db_engine = create_db_engine(config.node.effective_database_url)
    worker = ReportingWorker(config, create_session_factory(db_engine), engine)
    signal.signal(signal.SIGTERM, lambda *_: worker.request_stop())
    signal.signal(signal.SIGINT, lambda *_: worker.request_stop())
    print(
        f"worker {worker.worker_id} running engine {engine.identity.name} "
        f"{engine.identity.version}; Ctrl-C stops",
        flush=True,
    )
    try:
        # A database that is down at start-up is waited for, like an outage later on.
        if worker.wait_for_database(db_engine):
            worker.run(poll_seconds=args.poll or config.worker.poll_seconds)
    finally:
        db_engine.dispose()
    return 0


def _cmd_report(config: Config, args: argparse.Namespace) -> int:
    from dicomnode.file_report import report_files

    return report_files(
        config, _configured_engine(config), args.files, out_dir=args.out, as_json=args.json
    )


def _cmd_retry(config: Config, args: argparse.Namespace) -> int:
    from dicomnode.delivery import retry_deliveries

    engine = create_db_engine(config.node.effective_database_url)
    try:
        check_schema(engine)
        with session_scope(create_session_factory(engine)) as session:
            result = retry_deliveries(session, args.ids)
            if result.queued:
                notify(session, REPORTED_CHANNEL)
    finally:
        engine.dispose()
    for row_id, reason in sorted(result.skipped.items()):
        print(f"not sent: {reason}" if row_id == 0 else f"#{row_id} not sent: {reason}")
    print(
        f"{len(result.queued)} delivery(ies) queued again; the running node sends them on its "
        "next run"
    )
    return 0


def _cmd_requeue(config: Config, args: argparse.Namespace) -> int:
    from dicomnode.studies import requeue_studies

    if bool(args.study_uids) == bool(args.failed):
        raise DicomNodeError("name the studies to requeue (STUDY_UID ...) or pass --failed")
    engine = create_db_engine(config.node.effective_database_url)
    try:
        check_schema(engine)
        with session_scope(create_session_factory(engine)) as session:
            uids = requeue_studies(session, args.study_uids, all_failed=args.failed)
            if uids:
                notify(session, QUEUED_CHANNEL)
    finally:
        engine.dispose()
    for uid in uids:
        print(f"requeued {uid}")
    print(
        f"{len(uids)} study(ies) queued again; a running worker reports them now (PostgreSQL) "
        "or on its next poll"
    )
    return 0


def _cmd_show(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from dicomnode.show import collect, print_view

    engine = create_db_engine(config.node.effective_database_url)
    try:
        check_schema(engine)
        with session_scope(create_session_factory(engine)) as session:
            view = collect(session, Path(config.node.data_dir).resolve(), args.study_uid)
    finally:
        engine.dispose()
    print_view(view, as_json=args.json)
    return 0


def _cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    migrate_database(config.node.effective_database_url)
    print("database schema is up to date")
    return 0


def _collect_status(config: Config, limit: int = 20) -> dict[str, Any]:
    engine = create_db_engine(config.node.effective_database_url)
    try:
        check_schema(engine)
        sessions = create_session_factory(engine)
        with session_scope(sessions) as session:
            studies = count_by_state(session)
            quarantined = session.scalar(select(func.count()).select_from(QuarantineEntry)) or 0
            quarantine = session.scalars(
                select(QuarantineEntry).order_by(QuarantineEntry.id.desc()).limit(limit)
            ).all()
            versions = session.execute(
                select(InstanceVersion, Study.study_instance_uid)
                .join(Study, Study.id == InstanceVersion.study_id)
                .order_by(InstanceVersion.id.desc())
                .limit(limit)
            ).all()
            requeued = session.scalars(
                select(Study)
                .where(Study.requeued_at.is_not(None))
                .order_by(Study.requeued_at.desc())
                .limit(limit)
            ).all()
            deliveries = dict(
                session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all()
            )
            recent = session.scalars(
                select(Study).order_by(Study.last_instance_at.desc()).limit(10)
            ).all()
            problems = session.scalars(
                select(Delivery)
                .where(Delivery.state.in_([DeliveryState.DEAD, DeliveryState.REFUSED]))
                .order_by(Delivery.updated_at.desc())
            ).all()
            superseded = session.scalars(
                select(Delivery)
                .where(Delivery.state == DeliveryState.SUPERSEDED)
                .order_by(Delivery.updated_at.desc())
                .limit(20)
            ).all()
            in_flight = session.scalars(
                select(Delivery)
                .where(Delivery.state == DeliveryState.PENDING, Delivery.claimed_by.is_not(None))
                .order_by(Delivery.next_attempt_at)
            ).all()
            not_reportable = session.scalars(
                select(Study)
                .where(Study.state == StudyState.NOT_REPORTABLE)
                .order_by(Study.state_changed_at.desc())
                .limit(limit)
            ).all()
            workers = session.scalars(
                select(WorkerRecord).order_by(WorkerRecord.last_seen_at.desc()).limit(20)
            ).all()
            return {
                "ae_title": config.node.ae_title,
                "studies": studies,
                "quarantined": quarantined,
                "quarantine": [
                    {
                        "id": q.id,
                        "received_at": q.received_at.isoformat(),
                        "status": f"0x{q.status_code:04X}",
                        "calling_ae_title": q.calling_ae_title,
                        "source_address": q.source_address,
                        "sop_instance_uid": q.sop_instance_uid,
                        "reason": q.reason,
                        "path": q.path,
                    }
                    for q in quarantine
                ],
                "changed_instances": [
                    {
                        "received_at": v.received_at.isoformat(),
                        "study_instance_uid": study_uid,
                        "sop_instance_uid": v.sop_instance_uid,
                        "action": v.action,
                        "calling_ae_title": v.calling_ae_title,
                        "previous_path": v.previous_path,
                        "new_path": v.new_path,
                    }
                    for v, study_uid in versions
                ],
                "requeued_studies": [
                    {
                        "study_instance_uid": s.study_instance_uid,
                        "state": s.state,
                        "requeue_count": s.requeue_count,
                        "requeued_at": s.requeued_at.isoformat() if s.requeued_at else None,
                    }
                    for s in requeued
                ],
                "deliveries": deliveries,
                "not_reportable_studies": [
                    {
                        "study_instance_uid": s.study_instance_uid,
                        "accession_number": s.accession_number,
                        "calling_ae_title": s.calling_ae_title,
                        "instances": s.instance_count,
                        "at": s.state_changed_at.isoformat(),
                        "reason": s.error,
                    }
                    for s in not_reportable
                ],
                "recent_studies": [
                    {
                        "study_instance_uid": s.study_instance_uid,
                        "state": s.state,
                        "instances": s.instance_count,
                        "last_instance_at": s.last_instance_at.isoformat(),
                        "error": s.error,
                    }
                    for s in recent
                ],
                "failed_deliveries": [
                    {
                        "id": d.id,
                        "state": d.state,
                        "destination": d.destination,
                        "sop_instance_uid": d.sop_instance_uid,
                        "attempts": d.attempts,
                        "last_status": None if d.last_status is None else f"0x{d.last_status:04X}",
                        "last_error": d.last_error,
                    }
                    for d in problems
                ],
                "superseded_deliveries": [
                    {
                        "id": d.id,
                        "destination": d.destination,
                        "sop_instance_uid": d.sop_instance_uid,
                        "study_instance_uid": d.study.study_instance_uid,
                        "superseded_at": d.superseded_at.isoformat() if d.superseded_at else None,
                        "attempts": d.attempts,
                        "last_error": d.last_error,
                    }
                    for d in superseded
                ],
                "deliveries_in_flight": [
                    {
                        "id": d.id,
                        "destination": d.destination,
                        "claimed_by": d.claimed_by,
                        "claim_expires_at": d.next_attempt_at.isoformat(),
                    }
                    for d in in_flight
                ],
                "workers": [_worker_status(w) for w in workers],
            }
    finally:
        engine.dispose()


def _worker_status(worker: WorkerRecord) -> dict[str, Any]:
    """A worker's lease beside its engine's measured batch latency."""
    latency = worker.max_batch_seconds
    if worker.stopped_at is not None:
        state = "stopped"
    elif utcnow() - worker.last_seen_at > timedelta(seconds=worker.lease_seconds):
        state = "not seen for longer than its lease (crashed?)"
    else:
        state = "running"
    if latency is None:
        note = "no batch measured yet"
    elif latency > worker.lease_seconds:
        note = (
            "the engine is slower than the lease: the heartbeat keeps its studies, but lower "
            "engine.batch_size or raise engine.lease_seconds"
        )
    elif latency > worker.heartbeat_seconds:
        note = "slower than the heartbeat interval: renewed while reporting"
    else:
        note = "within the heartbeat interval"
    return {
        "id": worker.id,
        "state": state,
        "engine": worker.engine_name,
        "lease_seconds": worker.lease_seconds,
        "heartbeat_seconds": worker.heartbeat_seconds,
        "batches": worker.batches,
        "last_batch_seconds": worker.last_batch_seconds,
        "max_batch_seconds": latency,
        "max_batch_to_lease": None if latency is None else round(latency / worker.lease_seconds, 3),
        "last_seen_at": worker.last_seen_at.isoformat(),
        "note": note,
    }


def _cmd_status(config: Config, args: argparse.Namespace) -> int:
    status = _collect_status(config, args.limit)
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
        return 0
    print(f"node {status['ae_title']}")
    print("studies:     " + (", ".join(f"{k} {v}" for k, v in status["studies"].items()) or "none"))
    print(f"quarantined: {status['quarantined']}")
    print(
        "deliveries:  " + (", ".join(f"{k} {v}" for k, v in status["deliveries"].items()) or "none")
    )
    if status["recent_studies"]:
        print("recent studies:")
        for s in status["recent_studies"]:
            print(f"  {s['study_instance_uid']}  {s['state']:<14} {s['instances']:>3} instance(s)")
    if status["not_reportable_studies"]:
        print("not reportable (not what the engine was made for; no report, read them as usual):")
        for s in status["not_reportable_studies"]:
            print(
                f"  {s['study_instance_uid']}  {s['at'][:19]} from {s['calling_ae_title'] or '?'}"
                f": {s['reason']}"
            )
    if status["quarantine"]:
        print(
            f"quarantine (latest {len(status['quarantine'])}, files under "
            f"{config.node.data_dir}/spool/):"
        )
        for q in status["quarantine"]:
            print(
                f"  {q['received_at'][:19]} {q['status']} from {q['calling_ae_title'] or '?'} "
                f"({q['source_address'] or '?'}) {q['path']}: {q['reason']}"
            )
    if status["changed_instances"]:
        print("instances re-sent with other content (storage.changed_instance):")
        for v in status["changed_instances"]:
            print(
                f"  {v['received_at'][:19]} {v['action']:<10} {v['sop_instance_uid']} "
                f"(study {v['study_instance_uid']}) from {v['calling_ae_title'] or '?'}; "
                f"previous {v['previous_path']}"
            )
    if status["requeued_studies"]:
        print("requeued by an operator (dicomnode requeue):")
        for r in status["requeued_studies"]:
            print(
                f"  {r['study_instance_uid']}  {r['state']:<9} {r['requeue_count']} time(s), "
                f"last {r['requeued_at'][:19] if r['requeued_at'] else '?'}"
            )
    if status["failed_deliveries"]:
        print("deliveries needing attention (dicomnode retry ID re-sends):")
        for d in status["failed_deliveries"]:
            print(
                f"  #{d['id']} {d['state']} to {d['destination']} after {d['attempts']} attempt(s)"
                f" status {d['last_status']}: {d['last_error']}"
            )
    if status["deliveries_in_flight"]:
        print("deliveries in flight (hidden from other senders until the claim expires):")
        for d in status["deliveries_in_flight"]:
            print(
                f"  #{d['id']} to {d['destination']} by {d['claimed_by']} "
                f"until {d['claim_expires_at']}"
            )
    if status["superseded_deliveries"]:
        print("superseded (a newer report of the study replaced them; never sent again):")
        for d in status["superseded_deliveries"]:
            print(
                f"  #{d['id']} superseded at {d['superseded_at']} (study "
                f"{d['study_instance_uid']}, {d['attempts']} attempt(s) before)"
            )
    if status["workers"]:
        print("workers (lease vs measured engine latency per batch):")
        for w in status["workers"]:
            latency = "-" if w["max_batch_seconds"] is None else f"{w['max_batch_seconds']:.1f} s"
            print(
                f"  {w['id']} {w['state']}: lease {w['lease_seconds']:.0f} s, heartbeat "
                f"{w['heartbeat_seconds']:.0f} s, engine max {latency} over {w['batches']} "
                f"batch(es): {w['note']}"
            )
    return 0


def _cmd_config(config: Config, args: argparse.Namespace) -> int:
    print(json.dumps(config.to_jsonable(), indent=2, ensure_ascii=False))
    return 0


def _cmd_echo(config: Config, args: argparse.Namespace) -> int:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=config.delivery.calling_ae_title)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = args.timeout
    assoc = ae.associate(args.host, args.port, ae_title=args.ae_title)
    if not assoc.is_established:
        print(f"association with {args.ae_title}@{args.host}:{args.port} failed", file=sys.stderr)
        return 1
    status = assoc.send_c_echo()
    assoc.release()
    code = getattr(status, "Status", None)
    print(f"C-ECHO {args.ae_title}@{args.host}:{args.port}: status {code!r}")
    return 0 if code == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomnode",
        description="On-premise chest X-ray reporting node: DICOM listener, queue and delivery.",
    )
    parser.add_argument("--version", action="version", version=f"dicomnode {__version__}")
    parser.add_argument(
        "-c",
        "--config",
        help="TOML configuration file (default: $DICOMNODE_CONFIG, else the embedded defaults)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run the DICOM listener and the scheduler until stopped")
    p_worker = sub.add_parser("worker", help="report queued studies with the configured engine")
    p_worker.add_argument(
        "--poll",
        type=float,
        default=None,
        help="seconds between idle polls, the safety net behind wake-ups (default: "
        "worker.poll_seconds)",
    )
    p_report = sub.add_parser(
        "report",
        help="run the configured engine on DICOM files and print the Spanish draft (no PACS)",
    )
    p_report.add_argument("files", nargs="+", help="DICOM files; grouped into studies by UID")
    p_report.add_argument("--out", help="also write the report objects (SR, GSPS) to this folder")
    p_report.add_argument("--json", action="store_true", help="machine-readable output")
    p_retry = sub.add_parser("retry", help="send refused or dead-letter deliveries again")
    p_retry.add_argument("ids", nargs="*", type=int, help="delivery ids (default: all)")
    sub.add_parser("migrate", help="create or upgrade the database schema")
    p_status = sub.add_parser("status", help="studies by state, quarantine and deliveries")
    p_status.add_argument("--json", action="store_true", help="machine-readable output")
    p_status.add_argument(
        "--limit", type=int, default=20, help="entries listed per section (default 20)"
    )
    p_requeue = sub.add_parser(
        "requeue", help="send failed (or reported) studies back to the reporting queue"
    )
    p_requeue.add_argument("study_uids", nargs="*", metavar="STUDY_UID")
    p_requeue.add_argument("--failed", action="store_true", help="every failed study")
    p_show = sub.add_parser(
        "show", help="print the current report the node wrote for a study, or why there is none"
    )
    p_show.add_argument("study_uid", metavar="STUDY_UID")
    p_show.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("config", help="validate and print the effective configuration")
    p_echo = sub.add_parser("echo", help="C-ECHO a DICOM peer (check a destination)")
    p_echo.add_argument("host")
    p_echo.add_argument("port", type=int)
    p_echo.add_argument("--ae-title", default="ANY-SCP", help="called AE title")
    p_echo.add_argument("--timeout", type=float, default=10.0)
    return parser


COMMANDS = {
    "serve": _cmd_serve,
    "worker": _cmd_worker,
    "report": _cmd_report,
    "retry": _cmd_retry,
    "requeue": _cmd_requeue,
    "migrate": _cmd_migrate,
    "status": _cmd_status,
    "show": _cmd_show,
    "config": _cmd_config,
    "echo": _cmd_echo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.log_level)
    try:
        config = load_config(args.config)
        return COMMANDS[args.command](config, args)
    except (DicomNodeError, EngineError) as exc:
        print(f"dicomnode: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
