"""Start-up reconciliation: the spool and the database agree before the node accepts more.

A crash between the atomic rename of an instance file and its database commit leaves a
complete file without a row. The peer never got a success status for it and will usually
resend, but the file is indexed here anyway so nothing on disk is ever orphaned.
"""

from __future__ import annotations

import hashlib
import logging

import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicomnode.config import RoutingConfig
from dicomnode.db import Instance, session_scope
from dicomnode.exceptions import InvalidUIDError
from dicomnode.routing import InstanceFacts, match_rule
from dicomnode.spool import Spool, StoredFile
from dicomnode.studies import ReceivedInstance, record_instance
from dicomnode.uids import validate_uid

logger = logging.getLogger(__name__)


def reconcile_spool(spool: Spool, sessions: sessionmaker[Session], routing: RoutingConfig) -> int:
    """Remove partial files and index complete files that have no row. Returns rows added."""
    spool.remove_partial_files()
    with session_scope(sessions) as session:
        known = set(session.scalars(select(Instance.path)).all())
    added = 0
    for relative in spool.iter_instance_files():
        if relative in known:
            continue
        path = spool.absolute(relative)
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            received = ReceivedInstance(
                study_uid=validate_uid(ds.get("StudyInstanceUID"), name="StudyInstanceUID"),
                series_uid=validate_uid(ds.get("SeriesInstanceUID"), name="SeriesInstanceUID"),
                sop_uid=validate_uid(ds.get("SOPInstanceUID"), name="SOPInstanceUID"),
                sop_class_uid=validate_uid(ds.get("SOPClassUID"), name="SOPClassUID"),
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                modality=str(ds.get("Modality", "") or ""),
                body_part=str(ds.get("BodyPartExamined", "") or ""),
                view_position=str(ds.get("ViewPosition", "") or ""),
                patient_id=str(ds.get("PatientID", "") or ""),
                accession_number=str(ds.get("AccessionNumber", "") or ""),
                calling_ae_title=str(ds.file_meta.get("SourceApplicationEntityTitle", "") or ""),
            )
        except (OSError, InvalidUIDError, pydicom.errors.InvalidDicomError, AttributeError) as exc:
            logger.error("spool file %s is unreadable and left in place: %s", relative, exc)
            continue
        data = path.read_bytes()
        stored = StoredFile(relative, len(data), hashlib.sha256(data).hexdigest())
        facts = InstanceFacts(
            received.modality,
            received.body_part,
            received.view_position,
            received.sop_class_uid,
            received.calling_ae_title,
        )
        with session_scope(sessions) as session:
            if record_instance(session, received, stored, match_rule(routing, facts)):
                added += 1
    if added:
        logger.warning(
            "indexed %d spool file(s) that had no database row (interrupted store)", added
        )
    return added
