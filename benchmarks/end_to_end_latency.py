"""End-to-end latency as a new user sees it: ``storescu`` of a real study into ``dicomnode serve``
-> the Spanish SR in ``data/outputs/`` -> delivered to a DCMTK ``storescp`` destination.

Everything runs as the user runs it: the node and the destination are separate processes on
loopback, the study is sent with DCMTK ``storescu``. The figures are seconds after the
stability window (the time the node must wait by design), from the end of ``storescu`` to

- ``written``: the Basic Text SR file appearing under ``data/outputs/<study>/``;
- ``delivered``: the same SR arriving in ``storescp``'s folder.

Modes, side by side: ``serve`` (the out-of-the-box node, one worker in its process, each step
waking the next) and ``separate`` (``worker.in_serve = false`` plus a ``dicomnode worker``
process on the same SQLite database: no cross-process wake-up, so the worker's idle poll
shows). Each repeat starts a fresh node (a new data folder), so no run reuses another's state.

Without ``--artifact`` the tiny random-weight test engine is exported first and relabelled an
evaluation engine: it measures the node's plumbing with a real ONNX Runtime engine of tiny
cost, not a trained engine's inference time (add that from ``benchmarks/engine_backends.py``).

    python benchmarks/end_to_end_latency.py [--artifact DIR] [--window 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import BasicTextSRStorage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_process import REPO as ROOT
from node_process import dcmtk, free_port, wait_listening

DEFAULT_FILE = ROOT.parent / "shared" / "data" / "dicom" / "rg1_chest_cr_uncompressed.dcm"


def evaluation_engine(out: Path) -> Path:
    """The tiny test engine, relabelled ``purpose="evaluation"`` so the node's commands run it."""
    import logging

    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    sys.path.insert(0, str(ROOT))
    from engine.artifact import load_artifact, write_manifest
    from tests.support.tiny_engine import build_tiny_artifact

    build_tiny_artifact(out)
    manifest = load_artifact(out).manifest
    write_manifest(out, manifest.model_copy(update={"purpose": "evaluation"}))
    return out


def narrative_files(folder: Path) -> list[Path]:
    found = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # a file still being written: look again
            continue
        if ds.get("SOPClassUID") == BasicTextSRStorage:
            found.append(path)
    return found


def wait_for(folder: Path, deadline: float) -> float | None:
    while time.monotonic() < deadline:
        if folder.exists() and narrative_files(folder):
            return time.monotonic()
        time.sleep(0.02)
    return None


def run_once(
    mode: str, artifact: Path, files: list[Path], window: float, work: Path
) -> dict[str, Any]:
    port, dest_port = free_port(), free_port()
    received = work / "storescp"
    received.mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "DICOMNODE__NODE__DATA_DIR": str(work / "data"),
        "DICOMNODE__NODE__PORT": str(port),
        "DICOMNODE__NODE__BIND_ADDRESS": "127.0.0.1",
        "DICOMNODE__ENGINE__ARTIFACT": str(artifact),
        "DICOMNODE__STABILITY__WINDOW_SECONDS": str(window),
        "DICOMNODE__WORKER__IN_SERVE": "true" if mode == "serve" else "false",
        "DICOMNODE__DELIVERY__DESTINATIONS": (
            f'[{{name = "scp", ae_title = "STORESCP", host = "127.0.0.1", port = {dest_port}}}]'
        ),
    }
    cli = [sys.executable, "-m", "dicomnode.cli", "--log-level", "WARNING"]
    procs = [
        subprocess.Popen(
            [dcmtk("storescp"), "-aet", "STORESCP", "-od", str(received), "+xa", str(dest_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen([*cli, "serve"], env=env, stdout=subprocess.DEVNULL),
    ]
    try:
        wait_listening(port, 120)
        wait_listening(dest_port, 120)
        if mode == "separate":
            procs.append(subprocess.Popen([*cli, "worker"], env=env, stdout=subprocess.DEVNULL))
            time.sleep(5)  # the worker loads its engine before the study arrives
        else:
            time.sleep(1)
        subprocess.run(
            [dcmtk("storescu"), "-xs", "-aec", "CXRNODE", "127.0.0.1", str(port), *map(str, files)],
            check=True,
            capture_output=True,
        )
        sent = time.monotonic()
        written = wait_for(work / "data" / "outputs", sent + window + 60)
        delivered = wait_for(received, sent + window + 60)
        time.sleep(1.0)  # the report's other objects are still being sent: let them finish
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
    return {
        "written": None if written is None else round(written - sent - window, 3),
        "delivered": None if delivered is None else round(delivered - sent - window, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, help="engine artifact (default: tiny test engine)")
    parser.add_argument("--window", type=float, default=2.0, help="stability window, seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["serve", "separate"])
    parser.add_argument("files", nargs="*", type=Path, default=[DEFAULT_FILE])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="e2e-latency-") as tmp:
        artifact = args.artifact or evaluation_engine(Path(tmp) / "engine")
        results: dict[str, Any] = {}
        for mode in args.modes:
            runs = [
                run_once(mode, artifact, args.files, args.window, Path(tmp) / f"{mode}-{i}")
                for i in range(args.repeats)
            ]
            summary: dict[str, Any] = {"runs": runs}
            for key in ("written", "delivered"):
                values = [r[key] for r in runs if r[key] is not None]
                summary[f"{key}_median_s"] = round(statistics.median(values), 3) if values else None
            results[mode] = summary
            print(
                f"{mode:<9} window {args.window:.1f} s + written {summary['written_median_s']} s, "
                f"delivered {summary['delivered_median_s']} s (median of {args.repeats}; "
                f"runs {[(r['written'], r['delivered']) for r in runs]})",
                flush=True,
            )
    print(json.dumps({"window_s": args.window, "files": [str(f) for f in args.files], **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
