"""Receive throughput: DCMTK storescu sending one set of files to this node and to DCMTK storescp.

Usage: python benchmarks/receive_throughput.py [--copies N] [--rounds R] [--data DIR]

Both receivers run on loopback and write every instance to disk. This node also fsyncs each
file and commits its database row before answering, which storescp does not; the ratio shows
what durability costs. Prints images/s and MB/s per receiver (best of the rounds) and the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_process import REPO, dcmtk, free_port, receive_only_config, serving, wait_listening

STORESCU_FLAG = {
    "1.2.840.10008.1.2.1": [],
    "1.2.840.10008.1.2.4.90": ["-xv"],
    "1.2.840.10008.1.2.4.91": ["-xw"],
    "1.2.840.10008.1.2.4.50": ["-xy"],
}


def make_set(source_dir: Path, copies: int, out: Path) -> dict[str, list[Path]]:
    """``copies`` renamed copies of each real file, grouped by transfer syntax."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for src in sorted(source_dir.glob("*.dcm")):
        ds = pydicom.dcmread(src)
        ts = str(ds.file_meta.TransferSyntaxUID)
        for i in range(copies):
            ds.StudyInstanceUID = generate_uid()
            ds.SeriesInstanceUID = generate_uid()
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = out / f"{src.stem}-{i}.dcm"
            ds.save_as(path, enforce_file_format=True)
            groups[ts].append(path)
    return groups


def send(port: int, called: str, groups: dict[str, list[Path]]) -> float:
    start = time.perf_counter()
    for ts, files in groups.items():
        cmd = [dcmtk("storescu"), *STORESCU_FLAG[ts], "-aec", called, "127.0.0.1", str(port)]
        subprocess.run([*cmd, *map(str, files)], check=True, capture_output=True)
    return time.perf_counter() - start


def check_count(directory: Path, groups: dict[str, list[Path]]) -> None:
    expected = sum(len(g) for g in groups.values())
    stored = sum(1 for p in directory.rglob("*") if p.is_file())
    if stored != expected:
        raise RuntimeError(f"{directory}: {stored} files stored, {expected} sent")


def run_node(groups: dict[str, list[Path]], work: Path) -> float:
    port = free_port()
    data = work / "node-data"
    shutil.rmtree(data, ignore_errors=True)
    config = receive_only_config(work / "node.toml", port, data)
    with serving(config=config, port=port):
        seconds = send(port, "CXRNODE", groups)
    check_count(data / "spool" / "instances", groups)
    return seconds


def run_storescp(groups: dict[str, list[Path]], work: Path) -> float:
    port = free_port()
    out = work / "storescp-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    proc = subprocess.Popen(
        # -B: write data sets exactly as received, as this node does; the largest PDU it allows.
        [
            dcmtk("storescp"),
            "+xa",
            "-B",
            "--max-pdu",
            "131072",
            "-aet",
            "STORESCP",
            "-od",
            str(out),
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        seconds = send(port, "STORESCP", groups)
    finally:
        proc.terminate()
        proc.wait(30)
    check_count(out, groups)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20, help="copies of each real file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dicom")
    args = parser.parse_args()
    for tool in ("storescu", "storescp"):
        dcmtk(tool)
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp:
        work = Path(tmp)
        (work / "set").mkdir()
        groups = make_set(args.data, args.copies, work / "set")
        files = [p for g in groups.values() for p in g]
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        results: dict[str, list[float]] = {"dicomnode": [], "storescp": []}
        for _ in range(args.rounds):  # interleaved, so drift affects both alike
            results["dicomnode"].append(run_node(groups, work))
            results["storescp"].append(run_storescp(groups, work))
    print(f"set: {len(files)} files, {megabytes:.1f} MB, {args.rounds} rounds (best shown)")
    print(f"{'receiver':<10} {'seconds':>8} {'images/s':>9} {'MB/s':>7}")
    best = {name: min(times) for name, times in results.items()}
    for name, seconds in best.items():
        print(f"{name:<10} {seconds:8.2f} {len(files) / seconds:9.1f} {megabytes / seconds:7.1f}")
    print(f"ratio dicomnode/storescp throughput: {best['storescp'] / best['dicomnode']:.2f}")


if __name__ == "__main__":
    main()
