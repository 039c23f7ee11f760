"""The durable spool: received instances on disk, exactly as received.

Layout under the spool root::

    instances/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    instances/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>~<sha256[:16]>.dcm
        (a later version of an instance with other bytes; see storage.changed_instance)
    quarantine/<timestamp>-<random>.dcm  (+ .json with the reason)

A file only ever appears under its final name complete and flushed: it is written to a
temporary name in the same directory, fsync'ed, renamed atomically, and the directory is
fsync'ed. Paths are built from validated UIDs only, so a crafted UID cannot escape the root.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicomnode.exceptions import SpoolError
from dicomnode.uids import validate_uid

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".partial"


@dataclass(frozen=True)
class StoredFile:
    """Where an instance landed, relative to the spool root, and what it holds.

    ``sha256`` is that of the data set as received (the bytes after the file meta): the meta
    names the sender, so the same instance from two associations differs only there.
    """

    relative_path: str
    size_bytes: int
    sha256: str


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durable(path: Path, stop_at: Path) -> None:
    """Create ``path`` and fsync each new directory's parent, so the new entries persist."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current != stop_at:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        _fsync_dir(directory.parent)


def write_durably(target: Path, data: bytes | Sequence[bytes], root: Path) -> None:
    """Write ``data`` to ``target`` atomically: temp file, fsync, rename, fsync directory.

    ``data`` may be given in parts (file meta, then the data set as received), so a large
    instance is never joined into one more copy in memory.
    Any failure, creating the directories included (not writable, no inode left), is a
    :class:`SpoolError`, which the node answers with an out-of-resources status.
    """
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")
    try:
        _makedirs_durable(target.parent, root)
        with open(tmp, "xb") as fh:
            for part in [data] if isinstance(data, bytes) else data:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise SpoolError(f"could not write {target}: {exc}") from exc


class DataDirLock:
    """An exclusive lock on a data directory, so a second node cannot share it.

    ``flock`` on ``<data_dir>/.lock``: released by the kernel when the process dies, so a
    crash never leaves a stale lock behind.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolError(
                f"cannot use the data directory {self.path.parent}: {exc.strerror}. "
                "Make it writable by the node's user or set node.data_dir"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolError(
                f"another node is already running on the data directory {self.path.parent}; "
                "stop it, or give this one its own node.data_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Spool:
    """Received instances and quarantined input under one root directory."""

    def __init__(self, root: Path) -> None:
        if not isinstance(root, Path):
            raise TypeError("root must be a pathlib.Path")
        self.root = root.resolve()
        self.instances_dir = self.root / "instances"
        self.quarantine_dir = self.root / "quarantine"
        try:
            for directory in (self.root, self.instances_dir, self.quarantine_dir):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(
                f"cannot create the spool {self.root}: {exc.strerror}. Make node.data_dir "
                "writable by the node's user"
            ) from exc

    def check_writable(self) -> None:
        """Write and remove a probe file, so a read-only spool stops start-up, not each C-STORE."""
        probe = self.root / f".probe-{secrets.token_hex(4)}"
        try:
            write_durably(probe, b"probe", self.root)
            probe.unlink()
        except (SpoolError, OSError) as exc:
            raise SpoolError(
                f"the spool {self.root} is not writable ({exc}); make node.data_dir writable "
                "by the node's user and check the file system is not mounted read-only"
            ) from exc

    def relative_instance_path(self, study_uid: str, series_uid: str, sop_uid: str) -> str:
        study = validate_uid(study_uid, name="StudyInstanceUID")
        series = validate_uid(series_uid, name="SeriesInstanceUID")
        sop = validate_uid(sop_uid, name="SOPInstanceUID")
        return f"instances/{study}/{series}/{sop}.dcm"

    def absolute(self, relative_path: str) -> Path:
        path = (self.root / relative_path).resolve()
        if not path.is_relative_to(self.root):
            raise SpoolError(f"{relative_path!r} points outside the spool {self.root}")
        return path

    def store_instance(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        encoded: Sequence[bytes],
        content_sha256: str,
    ) -> StoredFile:
        """Durably write one encoded DICOM file (preamble, meta and data set as received)."""
        relative = self.relative_instance_path(study_uid, series_uid, sop_uid)
        write_durably(self.root / relative, encoded, self.root)
        return StoredFile(relative, sum(map(len, encoded)), content_sha256)

    def quarantine(
        self, encoded: bytes | Sequence[bytes], reason: str, details: dict[str, Any]
    ) -> str:
        """Keep input the node cannot use, with a JSON sidecar saying why. Returns its path."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        name = f"{stamp}-{secrets.token_hex(4)}"
        data_path = self.quarantine_dir / f"{name}.dcm"
        write_durably(data_path, encoded, self.root)
        sidecar = {"reason": reason, "received_at": stamp, **details}
        write_durably(
            self.quarantine_dir / f"{name}.json",
            json.dumps(sidecar, indent=2, ensure_ascii=False, default=str).encode("utf-8"),
            self.root,
        )
        return str(data_path.relative_to(self.root))

    def store_version(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        encoded: Sequence[bytes],
        content_sha256: str,
    ) -> StoredFile:
        """Durably write another version of an instance already stored, beside the first.

        Named ``<SOPInstanceUID>~<sha256 prefix>.dcm``, so the same bytes always land on the
        same name and a crash before the database commit is recognised at start-up.
        """
        base = self.relative_instance_path(study_uid, series_uid, sop_uid)
        relative = f"{base[: -len('.dcm')]}~{content_sha256[:16]}.dcm"
        write_durably(self.root / relative, encoded, self.root)
        return StoredFile(relative, sum(map(len, encoded)), content_sha256)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def free_inodes(self) -> int | None:
        """Inodes an unprivileged process may still create; ``None`` where the file system
        has no fixed inode table (btrfs, some network mounts report 0 files)."""
        stat = os.statvfs(self.root)
        return None if stat.f_files == 0 else stat.f_favail

    def remove_partial_files(self) -> int:
        """Delete temporary files left by a crash mid-write; they were never acknowledged."""
        removed = 0
        for path in self.root.rglob(f"*{TMP_SUFFIX}"):
            path.unlink(missing_ok=True)
            removed += 1
        if removed:
            logger.warning("removed %d partial file(s) left by an interrupted write", removed)
        return removed

    def iter_instance_files(self) -> Iterator[str]:
        """Relative paths of every complete instance file in the spool."""
        for path in sorted(self.instances_dir.rglob("*.dcm")):
            yield str(path.relative_to(self.root))

    def remove_instance(self, relative_path: str) -> None:
        path = self.absolute(relative_path)
        path.unlink(missing_ok=True)
        # Drop empty series/study directories; never the instances root itself.
        for parent in (path.parent, path.parent.parent):
            if parent != self.instances_dir and parent.is_relative_to(self.instances_dir):
                try:
                    parent.rmdir()
                except OSError:
                    break
