"""Study life cycle in the database: the state table and its named transitions, recording
received instances (and changed versions of them), and marking studies stable."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicomnode.db import Instance, InstanceVersion, QuarantineEntry, Study, StudyState, utcnow
from dicomnode.exceptions import StudyStateError
from dicomnode.spool import StoredFile

logger = logging.getLogger(__name__)

S = StudyState
# Every allowed change of Study.state, enforced by Study.set_state, with the function of this
# module that makes it (the worker calls claim/fail/refuse/finish/finish_changed/release).
TRANSITIONS: dict[StudyState, dict[StudyState, str]] = {
    S.RECEIVED: {S.STABLE: "mark_stable_studies"},
    S.STABLE: {
        S.QUEUED: "mark_stable_studies",
        S.IGNORED: "mark_stable_studies",
        S.RECEIVED: "reopen",
    },
    S.QUEUED: {S.REPORTING: "claim", S.FAILED: "fail", S.RECEIVED: "reopen"},
    S.REPORTING: {
        S.REPORTING: "claim",  # an expired lease taken over by another worker
        S.REPORTED: "finish",
        S.FAILED: "fail",
        S.NOT_REPORTABLE: "refuse",
        S.RECEIVED: "finish_changed",  # new images arrived while reporting
        S.QUEUED: "release",
    },
    S.REPORTED: {S.RECEIVED: "reopen", S.QUEUED: "requeue"},
    S.FAILED: {S.RECEIVED: "reopen", S.QUEUED: "requeue"},
    S.NOT_REPORTABLE: {S.RECEIVED: "reopen", S.QUEUED: "requeue"},
    S.IGNORED: {S.RECEIVED: "reopen"},
}

# States in which a newly arrived (or corrected) instance sends the study back to RECEIVED:
# its report (if any) no longer covers every image, so it waits for stability again.
_REOPEN_STATES = {state for state, targets in TRANSITIONS.items() if S.RECEIVED in targets} - {
    S.REPORTING
}


def check_transition(study: Study, target: StudyState) -> None:
    """Raise :class:`StudyStateError` unless :data:`TRANSITIONS` allows the change."""
    current = StudyState(study.state)
    if target not in TRANSITIONS.get(current, {}):
        allowed = ", ".join(sorted(TRANSITIONS.get(current, {}))) or "none"
        raise StudyStateError(
            f"study {study.study_instance_uid} cannot go from {current} to {target} "
            f"(allowed from {current}: {allowed})"
        )


def reopen(study: Study, why: str) -> bool:
    """Back to RECEIVED (new or corrected images). Returns whether the study was reopened."""
    if study.state not in _REOPEN_STATES:
        return False
    logger.info("study %s reopened by %s (was %s)", study.study_instance_uid, why, study.state)
    study.set_state(S.RECEIVED)
    return True


def claim(study: Study, worker_id: str, lease_until: datetime) -> None:
    """A worker takes the study (QUEUED, or REPORTING with an expired lease)."""
    study.set_state(S.REPORTING)
    study.lease_owner = worker_id
    study.lease_expires_at = lease_until


def fail(study: Study, error: str) -> None:
    """The study cannot be reported (engine error, attempts exhausted); see ``error``."""
    study.set_state(S.FAILED)
    study.error = error
    study.lease_owner = study.lease_expires_at = None


def refuse(study: Study, reason: str) -> None:
    """The engine was not made for this study (its gate refused it): no report, not a failure.
    ``reason`` is kept in ``Study.error`` for ``dicomnode status`` and ``dicomnode show``."""
    study.set_state(S.NOT_REPORTABLE)
    study.error = reason
    study.lease_owner = study.lease_expires_at = None


def finish(study: Study) -> None:
    """The worker wrote the report objects."""
    study.set_state(S.REPORTED)
    study.error = None
    study.lease_owner = study.lease_expires_at = None


def finish_changed(study: Study) -> None:
    """New images arrived while reporting: wait for stability and report again."""
    study.set_state(S.RECEIVED)
    study.lease_owner = study.lease_expires_at = None


def release(study: Study, reason: str) -> None:
    """The worker gives the study back to the queue after an unexpected failure."""
    study.set_state(S.QUEUED)
    study.error = reason
    study.lease_owner = study.lease_expires_at = None


def requeue(study: Study, now: datetime | None = None) -> None:
    """An operator sends a failed, not reportable (a new engine, a corrected header) or reported
    study back to the queue: ``dicomnode requeue``.

    Attempts start again from zero; the event is counted and dated on the study."""
    if not study.reportable:
        raise StudyStateError(
            f"study {study.study_instance_uid} has no instance that matches a routing rule; "
            "nothing in it can be reported"
        )
    study.set_state(S.QUEUED)
    study.attempts = 0
    study.error = None
    study.lease_owner = study.lease_expires_at = None
    study.requeue_count = (study.requeue_count or 0) + 1
    study.requeued_at = now or utcnow()


def requeue_studies(
    session: Session, study_uids: Sequence[str] = (), *, all_failed: bool = False
) -> list[str]:
    """Requeue the studies named, or every failed one. Returns the UIDs requeued.

    Raises :class:`StudyStateError` naming a UID that is unknown or not in a requeueable state
    (nothing is changed then)."""
    if all_failed:
        studies = list(session.scalars(select(Study).where(Study.state == S.FAILED)).all())
    else:
        studies = []
        for uid in study_uids:
            study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
            if study is None:
                raise StudyStateError(f"no study {uid} in the database; check the UID")
            studies.append(study)
    for study in studies:
        previous = study.state
        requeue(study)
        logger.warning(
            "study %s requeued by the operator (was %s, requeue #%d)",
            study.study_instance_uid,
            previous,
            study.requeue_count,
        )
    return [s.study_instance_uid for s in studies]


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


def _study_for(session: Session, received: ReceivedInstance, now: datetime) -> Study:
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
            requeue_count=0,
            first_received_at=now,
            last_instance_at=now,
            state_changed_at=now,
        )
        session.add(study)
        session.flush()
    return study


def _touch(
    study: Study, received: ReceivedInstance, matched_rule: str | None, now: datetime, why: str
) -> None:
    reopen(study, why)
    study.calling_ae_title = received.calling_ae_title[:16] or study.calling_ae_title
    study.source_address = received.source_address[:64] or study.source_address
    study.revision += 1
    study.last_instance_at = now
    if matched_rule is not None:
        study.reportable = True
        study.matched_rule = study.matched_rule or matched_rule


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
    study = _study_for(session, received, now)
    _touch(study, received, matched_rule, now, "a new instance")
    study.instance_count += 1
    session.add(
        Instance(
            sop_instance_uid=received.sop_uid,
            sop_class_uid=received.sop_class_uid,
            study_id=study.id,
            series_instance_uid=received.series_uid,
            transfer_syntax_uid=received.transfer_syntax_uid,
            modality=received.modality[:16] or None,
            body_part=received.body_part[:64] or None,
            view_position=received.view_position[:16] or None,
            path=stored.relative_path,
            size_bytes=stored.size_bytes,
            sha256=stored.sha256,
            calling_ae_title=received.calling_ae_title[:16] or None,
            matched_rule=matched_rule,
            received_at=now,
        )
    )
    return True


def record_changed_version(
    session: Session,
    received: ReceivedInstance,
    stored: StoredFile | None,
    sha256: str,
    matched_rule: str | None,
    policy: str,
    now: datetime | None = None,
) -> str:
    """An instance already recorded arrived with other bytes; apply ``policy``
    (``storage.changed_instance``) and record the event. Returns ``"replaced"``,
    ``"kept-first"`` or ``"refused"``.

    ``keep-latest``: ``stored`` (the new file) becomes the current version; the previous file
    stays where it is, named in the :class:`InstanceVersion` row, and the study is reopened.
    """
    now = now or utcnow()
    current = session.scalar(select(Instance).where(Instance.sop_instance_uid == received.sop_uid))
    if current is None:
        raise ValueError(f"{received.sop_uid} is not recorded; use record_instance")
    action = {"keep-latest": "replaced", "keep-first": "kept-first", "refuse": "refused"}[policy]
    seen = session.scalar(
        select(InstanceVersion).where(
            InstanceVersion.sop_instance_uid == received.sop_uid,
            InstanceVersion.new_sha256 == sha256,
            InstanceVersion.action == action,
        )
    )
    if seen is not None and action != "replaced":
        return action  # the same changed version again: already recorded
    session.add(
        InstanceVersion(
            received_at=now,
            study_id=current.study_id,
            sop_instance_uid=received.sop_uid,
            action=action,
            previous_path=current.path,
            previous_sha256=current.sha256,
            new_path=None if stored is None else stored.relative_path,
            new_sha256=sha256,
            calling_ae_title=received.calling_ae_title[:16] or None,
            source_address=received.source_address[:64] or None,
        )
    )
    logger.warning(
        "%s from %s has other content than the stored instance of that SOP Instance UID; "
        "storage.changed_instance=%s: %s",
        received.sop_uid,
        received.calling_ae_title or received.source_address or "?",
        policy,
        {
            "replaced": "the new version is current, the older kept for audit",
            "kept-first": "the first version is kept, the new one discarded",
            "refused": "refused",
        }[action],
    )
    if action != "replaced":
        return action
    if stored is None:
        raise ValueError("keep-latest needs the new version stored")
    study = session.get(Study, current.study_id)
    assert study is not None
    if received.study_uid != study.study_instance_uid:
        # The correction moved the image to another study: both studies change.
        _touch(study, received, None, now, "an instance moved to another study")
        study.instance_count -= 1
        study = _study_for(session, received, now)
        study.instance_count += 1
        current.study_id = study.id
    _touch(study, received, matched_rule, now, "a corrected instance")
    current.series_instance_uid = received.series_uid
    current.sop_class_uid = received.sop_class_uid
    current.transfer_syntax_uid = received.transfer_syntax_uid
    current.modality = received.modality[:16] or None
    current.body_part = received.body_part[:64] or None
    current.view_position = received.view_position[:16] or None
    current.path = stored.relative_path
    current.size_bytes = stored.size_bytes
    current.sha256 = stored.sha256
    current.calling_ae_title = received.calling_ae_title[:16] or None
    current.matched_rule = matched_rule
    current.received_at = now
    return action


def fill_in_sender(session: Session, instance: Instance, received: ReceivedInstance) -> None:
    """A duplicate names its sender: fill in what an instance (and its study) lacks, e.g.
    one indexed at start-up from a file written before the sender was kept in the meta."""
    if received.calling_ae_title and not instance.calling_ae_title:
        instance.calling_ae_title = received.calling_ae_title[:16]
    study = session.get(Study, instance.study_id)
    if study is None:
        return
    if received.calling_ae_title and not study.calling_ae_title:
        study.calling_ae_title = received.calling_ae_title[:16]
    if received.source_address and not study.source_address:
        study.source_address = received.source_address[:64]


def routable_instance_paths(session: Session, study_id: int) -> list[str]:
    """Spool paths of the study's instances that matched a routing rule: only these go to
    the engine (a hand PA in a chest study must not be read as the frontal chest view)."""
    return list(
        session.scalars(
            select(Instance.path)
            .where(Instance.study_id == study_id, Instance.matched_rule.is_not(None))
            .order_by(Instance.id)
        ).all()
    )


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
    """Advance quiet studies one step: STABLE ones (marked by an earlier call) to QUEUED or
    IGNORED, then RECEIVED ones quiet for ``window`` to STABLE.

    Called once, a study stays ``stable`` until the next call; the scheduler's check at the
    end of a study's window calls it twice in one transaction, so the study is queued at once.
    Returns ``(study_uid, new_state)`` for each study moved. Idempotent, and driven only by
    the database, so it resumes correctly after a restart.
    """
    now = now or utcnow()
    moved: list[tuple[str, StudyState]] = []
    for study in session.scalars(
        select(Study).where(Study.state == S.STABLE).order_by(Study.last_instance_at)
    ).all():
        target = S.QUEUED if study.reportable else S.IGNORED
        study.set_state(target)
        logger.info(
            "study %s with %d instance(s): %s",
            study.study_instance_uid,
            study.instance_count,
            "queued for reporting" if target is S.QUEUED else "no rule matched, ignored",
        )
        moved.append((study.study_instance_uid, target))
    for study in session.scalars(
        select(Study)
        .where(Study.state == S.RECEIVED, Study.last_instance_at <= now - window)
        .order_by(Study.last_instance_at)
    ).all():
        study.set_state(S.STABLE)
        logger.info("study %s stable (nothing new for %s)", study.study_instance_uid, window)
        moved.append((study.study_instance_uid, S.STABLE))
    return moved


def count_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(select(Study.state, func.count()).group_by(Study.state)).all()
    return {state: count for state, count in rows}
