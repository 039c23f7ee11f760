"""Peak memory of the node receiving one large data set, as a multiple of its size.

Usage: python benchmarks/receive_memory.py [--mb 200] [--repo PATH]

Starts ``dicomnode serve`` from ``--repo`` (default: this checkout; point it at another
checkout to compare), sends one uncompressed single-frame image of about ``--mb`` MiB with
DCMTK storescu, and prints the server's peak resident memory (VmHWM) before and after.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_process import REPO, dcmtk, free_port, receive_only_config, serving


def big_image(path: Path, mebibytes: int, source: Path) -> int:
    ds = pydicom.dcmread(source)
    side = int((mebibytes * 2**20 / 2) ** 0.5)
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.SamplesPerPixel = 16, 12, 11, 1
    ds.PixelData = (np.arange(side * side, dtype=np.uint16) % 4096).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(path, enforce_file_format=True)
    return path.stat().st_size


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dicom")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cxr-mem-") as tmp:
        work = Path(tmp)
        big = work / "big.dcm"
        size = big_image(big, args.mb, args.data / "rg1_chest_cr_uncompressed.dcm")
        port = free_port()
        config = receive_only_config(
            work / "node.toml", port, work / "d", "maximum_pdu_size = 131072"
        )
        with serving(config=config, repo=args.repo, port=port) as proc:
            idle = peak_rss_mib(proc.pid)
            sent = subprocess.run(
                [dcmtk("storescu"), "-aec", "CXRNODE", "127.0.0.1", str(port), str(big)],
                capture_output=True,
                text=True,
            )
            peak = peak_rss_mib(proc.pid)
        stored = list((work / "d" / "spool" / "instances").rglob("*.dcm"))
    print(
        f"repo {args.repo}: data set {size / 2**20:.0f} MiB, storescu rc {sent.returncode}, "
        f"stored {len(stored)}"
    )
    print(
        f"peak RSS idle {idle:.0f} MiB, after receiving {peak:.0f} MiB; "
        f"growth {(peak - idle) / (size / 2**20):.2f}x the data set"
    )


if __name__ == "__main__":
    main()
