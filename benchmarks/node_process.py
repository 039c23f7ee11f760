"""What the receive and latency benchmarks share: DCMTK's tools, free ports, and a
``dicomnode serve`` process started from a checkout."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dcmtk(name: str) -> str:
    # pynetdicom installs scripts of the same names that shadow DCMTK's in a virtualenv.
    for directory in ("/usr/bin", "/usr/local/bin"):
        path = shutil.which(name, path=directory)
        if path:
            return path
    sys.exit(f"DCMTK's {name} not found in /usr/bin: install Debian's dcmtk")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def receive_only_config(path: Path, port: int, data_dir: Path, extra: str = "") -> Path:
    """A node config that only receives: no engine, so no worker competes for the CPU."""
    path.write_text(
        f'[node]\nbind_address = "127.0.0.1"\nport = {port}\ndata_dir = "{data_dir}"\n'
        f'min_free_disk_mb = 1\n{extra}\n[engine]\nartifact = ""\n'
    )
    return path


@contextmanager
def serving(
    *,
    command: str = "serve",
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    repo: Path = REPO,
    port: int | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``dicomnode COMMAND`` from ``repo``, stopped on exit; waits for ``port`` to listen."""
    cli = [sys.executable, "-m", "dicomnode.cli", "--log-level", "WARNING"]
    if config is not None:
        cli += ["--config", str(config)]
    environment = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": f"{repo.resolve()}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    proc = subprocess.Popen(
        [*cli, command], stdout=subprocess.DEVNULL, env=environment, cwd=repo
    )
    try:
        if port is not None:
            wait_listening(port, 120)
        yield proc
    finally:
        proc.terminate()
        proc.wait(60)
