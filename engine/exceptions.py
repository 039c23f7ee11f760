"""Errors raised by the engine runtime.

Every message names the file, study or setting at fault and says what to do about it, so the
operator reading a log line (or the worker marking a study failed) can act without the source.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class ArtifactError(EngineError):
    """The engine artifact cannot be used (corrupt, incomplete or incompatible)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class ArtifactNotFoundError(ArtifactError):
    """The artifact path, or a file the manifest lists, does not exist."""


class ManifestError(ArtifactError):
    """``manifest.json`` is missing, unreadable or does not follow the schema."""


class ChecksumMismatchError(ArtifactError):
    """A file's SHA-256 differs from the one recorded in the manifest."""


class IncompatibleArtifactError(ArtifactError):
    """The artifact's format version or shapes do not match what this runtime supports."""


class BackendError(EngineError):
    """A backend could not be created or failed while running a graph."""


class BackendUnavailableError(BackendError):
    """The requested backend's library or hardware is absent on this machine."""


class StudyError(EngineError):
    """One study cannot be reported; the worker marks it failed and carries on with the rest."""

    def __init__(self, message: str, *, study_instance_uid: str = "") -> None:
        self.study_instance_uid = study_instance_uid
        super().__init__(message)


class NoUsableImageError(StudyError):
    """The study holds no image the engine can read (no pixel data, or no chest view)."""


class PixelDecodeError(StudyError):
    """Pixel data could not be decoded (unsupported transfer syntax, truncated or corrupt data)."""


class EngineOutputError(StudyError):
    """The model produced unusable output for a study (NaN/inf values, or no report text)."""


class NotReportableError(StudyError):
    """The study is not what the engine was made for: the gate refused its images, or it holds
    no usable frontal chest image.

    Not a failure: the node records the study as not reportable, with the reasons, and writes
    no report. Send the study to a radiologist as usual.
    """


class NoFrontalImageError(NoUsableImageError, NotReportableError):
    """No image of the study is a usable frontal chest radiograph (each image's fate is named)."""


class ImageRejectedError(NoUsableImageError, NotReportableError):
    """An image cannot be meant as a chest radiograph for the model (one pixel, constant, too
    small, a colour document page such as a dose report). ``reason`` is a short stable code:
    ``"too_small"``, ``"constant"``, ``"colour_document"``, ``"not_frontal"``."""

    def __init__(self, message: str, *, reason: str, study_instance_uid: str = "") -> None:
        self.reason = reason
        super().__init__(message, study_instance_uid=study_instance_uid)
