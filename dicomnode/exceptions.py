"""Errors raised by the DICOM node. Each message says what to do about it."""

from __future__ import annotations


class DicomNodeError(Exception):
    """Base class of every error the node raises on purpose."""


class ConfigError(DicomNodeError):
    """The configuration is invalid; the message names the key and what is wrong."""


class SpoolError(DicomNodeError):
    """An instance could not be written durably to the spool."""


class InvalidUIDError(DicomNodeError, ValueError):
    """A UID is not a valid DICOM UID and must not be used to build paths or objects."""


class DatabaseError(DicomNodeError):
    """The database is unreachable or its schema is not at the expected revision."""


class ReportObjectError(DicomNodeError, ValueError):
    """A report and its source images do not fit together (other study, missing image, region
    off an image); the engine result or the spool lookup is wrong, so no object is written."""


class DestinationError(DicomNodeError, ValueError):
    """A delivery destination is misconfigured (AE title, host, port or TLS files); fix the
    configuration entry the message names."""


class StudyStateError(DicomNodeError):
    """A study state change the life-cycle table does not allow (for example requeueing a
    study that is still receiving); the message names the study and the allowed states."""
