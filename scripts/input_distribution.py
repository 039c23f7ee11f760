"""Print the distribution of model inputs from each source side by side, so drift is visible
before a model is trained.

Sources: NIH ChestX-ray14 JPEGs (the training images), the shared DICOMs (what the node is
served: the human chest CRs; the canine DX is listed apart), the Hannover PNGs (another
hospital). Every image goes through the one pipeline (``engine.preprocessing``) to the [0, 1]
display image and the letterboxed model input; per image: mean and spread of the image pixels,
the 5th/50th/95th percentiles, the letterbox share of the input, and whether it was refused or
flagged. Per source: the median and 5th-95th percentile range of each, and the shift of the mean
brightness from NIH in units of the spread of NIH image means.

    PYTHONPATH=$PWD python scripts/input_distribution.py [--data ../shared/data] [--size 224]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

from engine.artifact import InputSpec
from engine.exceptions import ImageRejectedError
from engine.preprocessing import (
    PreparedImage,
    dicom_to_display,
    image_file_to_display,
    prepare_dataset,
    prepare_image_file,
)

COLUMNS = ("mean", "std", "p05", "p50", "p95", "letterbox")


def describe(display: np.ndarray, prepared: PreparedImage) -> dict[str, float]:
    p05, p50, p95 = np.percentile(display, (5, 50, 95))
    return {
        "mean": float(display.mean()),
        "std": float(display.std()),
        "p05": float(p05),
        "p50": float(p50),
        "p95": float(p95),
        "letterbox": prepared.letterbox.padding_fraction,
    }


def run_source(
    items: list[tuple[str, Callable[[], tuple[np.ndarray, PreparedImage]]]],
) -> tuple[list[dict[str, float]], list[str]]:
    rows, notes, names = [], [], []
    for name, load in items:
        try:
            display, prepared = load()
        except ImageRejectedError as exc:
            notes.append(f"refused {name}: {exc.reason}")
            continue
        rows.append(describe(display, prepared))
        names.append(name)
        notes.extend(f"flagged {name}: {w}" for w in prepared.warnings)
    if len(rows) <= 10:  # few images (the shared DICOMs): show each
        notes.extend(
            f"  {name}: mean {r['mean']:.3f}, std {r['std']:.3f}, letterbox {r['letterbox']:.1%}"
            for name, r in zip(names, rows, strict=True)
        )
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--limit", type=int, default=0, help="images per source (0: all)")
    args = parser.parse_args(argv)
    spec = InputSpec(height=args.size, width=args.size)

    def files(folder: Path, pattern: str) -> list[Path]:
        found = sorted(folder.glob(pattern))
        return found[: args.limit] if args.limit else found

    def file_item(path: Path) -> tuple[str, Callable[[], tuple[np.ndarray, PreparedImage]]]:
        return path.name, lambda: (image_file_to_display(path), prepare_image_file(path, spec))

    def dicom_item(path: Path) -> tuple[str, Callable[[], tuple[np.ndarray, PreparedImage]]]:
        ds = pydicom.dcmread(path)
        return path.name, lambda: (dicom_to_display(ds), prepare_dataset(ds, spec))

    dicoms = sorted((args.data / "dicom").glob("*.dcm"))
    sources = {
        "NIH JPEG": [file_item(p) for p in files(args.data / "nih" / "images_512", "*.jpg")],
        "shared DICOM (human CR)": [
            dicom_item(p) for p in dicoms if not p.name.startswith("highdicom")
        ],
        "shared DICOM (canine DX)": [
            dicom_item(p) for p in dicoms if p.name.startswith("highdicom")
        ],
        "Hannover PNG": [
            file_item(p) for p in files(args.data / "hannover_covid" / "png", "*.png")
        ],
    }
    results = {name: run_source(items) for name, items in sources.items()}
    nih_means = np.array([r["mean"] for r in results["NIH JPEG"][0]])
    nih_centre, nih_spread = float(np.median(nih_means)), float(nih_means.std())
    header = f"{'source':26s} {'n':>4s} " + " ".join(f"{c:>18s}" for c in COLUMNS)
    print(f"model input {args.size}x{args.size}, normalisation {spec.normalization}")
    print("per column: median [5th-95th percentile over images]")
    print(header)
    for name, (rows, _) in results.items():
        if not rows:
            print(f"{name:26s} {0:4d}")
            continue
        cells = []
        for column in COLUMNS:
            values = np.array([r[column] for r in rows])
            low, mid, high = np.percentile(values, (5, 50, 95))
            cells.append(f"{mid:6.3f} [{low:.2f}-{high:.2f}]")
        print(f"{name:26s} {len(rows):4d} " + " ".join(f"{c:>18s}" for c in cells))
    print()
    print("mean brightness shift from NIH (median of image means), in NIH spreads:")
    for name, (rows, _) in results.items():
        if rows:
            shift = (np.median([r["mean"] for r in rows]) - nih_centre) / nih_spread
            print(f"  {name:26s} {shift:+.2f}")
    for name, (_, notes) in results.items():
        for note in notes:
            print(f"{name}: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
