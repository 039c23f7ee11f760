"""Study life cycle in the database: recording received instances and marking studies stable."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicomnode.db import Instance, QuarantineEntry, Study, StudyState, utcnow
from dicomnode.spool import StoredFile

logger = logging.getLogger(__name__)

# States in which a newly arrived instance sends the study back to RECEIVED: its report (if
# any) no longer covers every image, so it waits for stability again.
_REOPEN_STATES = {
    StudyState.STABLE,
    StudyState.QUEUED,
    StudyState.IGNORED,
    StudyState.REPORTED,
    StudyState.FAILED,
}


@dataclass(frozen=True)
class ReceivedInstance:
    """Identity and routing facts of one received instance, taken from its header."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str = ""
    body_part: str = ""
    view_position: str = ""
    patient_id: str = ""
    accession_number: str = ""
    calling_ae_title: str = ""
    source_address: str = ""


def instance_exists(session: Session, sop_uid: str) -> bool:
    return stored_sha256(session, sop_uid) is not None


def stored_sha256(session: Session, sop_uid: str) -> str | None:
    """The sha256 of the stored file of ``sop_uid``, or ``None`` if it was never stored."""
    return session.scalar(select(Instance.sha256).where(Instance.sop_instance_uid == sop_uid))


def record_instance(
    session: Session,
    received: ReceivedInstance,
    stored: StoredFile,
    matched_rule: str | None,
    now: datetime | None = None,
) -> bool:
    """Add the instance and update its study. Returns ``False`` if it was already recorded."""
    now = now or utcnow()
    if instance_exists(session, received.sop_uid):
        return False
    study = session.scalar(select(Study).where(Study.study_instance_uid == received.study_uid))
    if study is None:
        study = Study(
            study_instance_uid=received.study_uid,
            patient_id=received.patient_id[:64] or None,
            accession_number=received.accession_number[:16] or None,
            state=StudyState.RECEIVED,
            reportable=False,
            instance_count=0,
            revision=0,
            attempts=0,
            first_received_at=now,
            last_instance_at=now,
            state_changed_at=now,
        )
        session.add(study)
        session.flush()
    elif study.state in _REOPEN_STATES:
        logger.info(
            "study %s reopened by a new instance (was %s)", study.study_instance_uid, study.state
        )
        study.set_state(StudyState.RECEIVED)
    study.calling_ae_title = received.calling_ae_title or study.calling_ae_title
    study.source_address = received.source_address or study.source_address
    study.instance_count += 1
    study.revision += 1
    study.last_instance_at = now
    if matched_rule is not None:
        study.reportable = True
        study.matched_rule = study.matched_rule or matched_rule
    session.add(
        Instance(
            sop_instance_uid=received.sop_uid,
            sop_class_uid=received.sop_class_uid,
            study_id=study.id,
            series_instance_uid=received.series_uid,
            transfer_syntax_uid=received.transfer_syntax_uid,
            modality=received.modality or None,
            body_part=received.body_part or None,
            view_position=received.view_position or None,
            path=stored.relative_path,
            size_bytes=stored.size_bytes,
            sha256=stored.sha256,
            calling_ae_title=received.calling_ae_title or None,
            matched_rule=matched_rule,
            received_at=now,
        )
    )
    return True


def record_quarantine(
    session: Session,
    *,
    reason: str,
    status_code: int,
    path: str,
    sop_uid: str | None,
    calling_ae_title: str,
    source_address: str,
) -> None:
    session.add(
        QuarantineEntry(
            reason=reason,
            status_code=status_code,
            path=path,
            sop_instance_uid=(sop_uid or None) and sop_uid[:128],
            calling_ae_title=calling_ae_title[:16] or None,
            source_address=source_address[:64] or None,
        )
    )


def mark_stable_studies(
    session: Session, window: timedelta, now: datetime | None = None
) -> list[tuple[str, StudyState]]:
    """Move studies quiet for ``window`` from RECEIVED through STABLE to QUEUED or IGNORED.

    Returns ``(study_uid, new_state)`` for each study moved. Idempotent, and driven only by
    timestamps in the database, so it resumes correctly after a restart.
    """
    now = now or utcnow()
    studies = session.scalars(
        select(Study)
        .where(Study.state == StudyState.RECEIVED, Study.last_instance_at <= now - window)
        .order_by(Study.last_instance_at)
    ).all()
    moved: list[tuple[str, StudyState]] = []
    for study in studies:
        study.set_state(StudyState.STABLE)
        target = StudyState.QUEUED if study.reportable else StudyState.IGNORED
        study.set_state(target)
        logger.info(
            "study %s stable with %d instance(s): %s",
            study.study_instance_uid,
            study.instance_count,
            "queued for reporting" if target is StudyState.QUEUED else "no rule matched, ignored",
        )
        moved.append((study.study_instance_uid, target))
    return moved


def count_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(select(Study.state, func.count()).group_by(Study.state)).all()
    return {state: count for state, count in rows}
