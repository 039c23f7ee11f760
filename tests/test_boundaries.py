"""The package boundaries of DEVELOPERS.md hold: checked by importing every module in a fresh
interpreter and looking at what else got imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module({package!r})
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if ".migrations" in info.name:
        continue  # Alembic scripts only run inside Alembic
    importlib.import_module(info.name)
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


def _imported_by(package: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(package=package)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("dicomnode", {"torch"}),
        ("engine", {"pynetdicom", "dicomnode", "training", "torch"}),
        ("training", {"pynetdicom", "dicomnode"}),
    ],
)
def test_package_does_not_import(package: str, forbidden: set[str]) -> None:
    leaked = _imported_by(package) & forbidden
    assert not leaked, f"importing {package} pulls in {sorted(leaked)}"
