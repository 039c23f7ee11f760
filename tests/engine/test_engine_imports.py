"""The engine runtime loads without torch (lazy, PyTorch backend only), pynetdicom or training."""

from __future__ import annotations

import subprocess
import sys


def test_engine_imports_neither_torch_nor_pynetdicom_nor_training() -> None:
    code = (
        "import sys, engine.runtime, engine.backends, engine.preprocessing, engine.artifact;"
        "bad = [m for m in ('torch', 'pynetdicom', 'training') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
