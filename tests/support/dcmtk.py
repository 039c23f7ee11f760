"""Find DCMTK's command-line tools by name.

pynetdicom installs console scripts with the same names (``storescu``, ``storescp``,
``echoscu``), which shadow DCMTK's in an activated virtual environment. Interoperability
tests must run the real DCMTK programs, so each name is resolved to the first executable on
PATH (then /usr/bin) that reports itself as DCMTK.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess


@functools.cache
def dcmtk_tool(name: str) -> str | None:
    """Absolute path of DCMTK's ``name``, or ``None`` when DCMTK is not installed."""
    dirs = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]
    for directory in dict.fromkeys(dirs):
        path = shutil.which(name, path=directory)
        if path is None:
            continue
        try:
            out = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "OFFIS" in out or "dcmtk" in out.lower():
            return path
    return None


def require_dcmtk_tool(name: str) -> str:
    path = dcmtk_tool(name)
    if path is None:
        raise FileNotFoundError(f"DCMTK's {name} not found: install the Debian package dcmtk")
    return path
