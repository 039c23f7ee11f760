"""Calibrate and measure the engine's image gate (engine.gate): the Mahalanobis distance of the
encoder's pooled features to their distribution on the NIH training images.

1. Features of every image below through the runtime's own preprocessing and the artifact's
   ``encoder.onnx`` (ONNX Runtime, ``--threads``; the encoder needs its ``features`` output,
   format 1.2).
2. ``--calibrate``: mean and covariance (``--covariance``: ``diagonal``, the default, or
   ``ledoit-wolf``) of the NIH *train* features (the split training used:
   ``training.data.nih``, patient-disjoint); the threshold is the
   ``--percentile`` of the *validation* distances (train distances are optimistic: the
   covariance was fitted on them). Writes ``feature_stats.npz`` into the engine and sets
   ``gate.max_feature_distance``/``gate.feature_stats`` in its manifest (and the checksums of
   the files it names; other manifest fields are left as they are; ``--dry-run`` leaves the
   engine alone). Without ``--calibrate`` the engine's committed statistics and threshold are
   measured.
3. Refusals per set, with 95% bootstrap intervals over patients where patients are known:
   NIH test (false refusals), Hannover (another hospital), the real chest DICOMs, lateral
   chest radiographs, and sets that are not what the engine was made for: the canine thorax
   DX, other modalities (pydicom's bundled CT/MR/NM test files), natural and scientific images
   rendered to grey (``--photos``: e.g. scikit-image's bundled sample images, taken from its
   wheel), synthetic images, and NIH test images shown wrongly (inverted grey, turned 90
   degrees, only the upper-left quarter).

Writes ``gate.json`` and ``gate.md`` (and every image's distance in ``distances.jsonl``) under
``--out``::

    python scripts/calibrate_image_gate.py --engine engines/cxr-unpaired-es \\
        --data ../shared/data --photos /tmp/skimage_data --out results/gate --calibrate
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image

from engine.artifact import (
    MANIFEST_NAME,
    EngineArtifact,
    EngineManifest,
    load_artifact,
    sha256_file,
)
from engine.backends import create_backend
from engine.exceptions import ImageRejectedError
from engine.gate import COVARIANCES, FeatureStatistics, check_image_header
from engine.preprocessing import (
    dicom_to_display,
    normalize_intensity,
    prepare_display,
    read_image_file,
    stack_views,
)
from training.data.nih import NIHChestXray14Dataset
from training.metrics.bootstrap import Resampler, bootstrap_ci

STATS_FILE = "feature_stats.npz"
#: pydicom's bundled test images that are neither chest nor radiographs (single-frame grey).
PYDICOM_NON_CHEST = (
    "CT_small.dcm",
    "693_J2KI.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "MR_small.dcm",
    "examples_overlay.dcm",
    "JPEG2000.dcm",
)
CANINE = "highdicom_dx_canine_thorax.dcm"
BATCH = 16

Loader = Callable[[], np.ndarray]


@dataclass
class Item:
    """One image of a set: how to get its display values ([0, 1], white = dense)."""

    name: str
    load: Loader
    patient: str = ""
    note: str = ""
    path: Path | None = None


@dataclass
class Outcome:
    name: str
    patient: str
    distance: float | None  # None: refused by preprocessing before the model
    note: str = ""


@dataclass
class SetResult:
    key: str
    title: str
    kind: str  # "chest" (a refusal is a false refusal) or "other"
    outcomes: list[Outcome] = field(default_factory=list)


def _grey01(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array, dtype=np.float64)
    if a.ndim == 3:  # colour: ITU-R BT.601 luma, as a greyscale rendering would
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114])
    low, high = float(a.min()), float(a.max())
    return (a - low) / (high - low) if high > low else np.zeros_like(a)


def _at_least(display: np.ndarray, side: int) -> np.ndarray:
    """Small images (64-px MR) enlarged so preprocessing's size check does not hide them."""
    rows, cols = display.shape
    if min(rows, cols) >= side:
        return display
    scale = side / min(rows, cols)
    img = Image.fromarray(display.astype(np.float32), mode="F")
    img = img.resize((round(cols * scale), round(rows * scale)), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float64)


def file_loader(path: Path) -> Loader:
    return lambda: read_image_file(path)


def dicom_loader(path: Path, min_side: int = 0) -> Loader:
    def load() -> np.ndarray:
        display = dicom_to_display(pydicom.dcmread(path))
        return _at_least(display, min_side) if min_side else display

    return load


def photo_loader(path: Path) -> Loader:
    def load() -> np.ndarray:
        with Image.open(path) as img:
            return _at_least(_grey01(np.asarray(img.convert("RGB"))), 256)

    return load


def transformed(path: Path, how: str) -> Loader:
    def load() -> np.ndarray:
        a = read_image_file(path)
        if how == "inverted":
            return 1.0 - a
        if how == "rot90":
            return np.rot90(a).copy()
        h, w = a.shape
        return _at_least(a[: h // 2, : w // 2], 512)  # upper-left quarter: shoulder, apex

    return load


def constant(array: np.ndarray) -> Loader:
    return lambda: array


def synthetic_items(seed: int = 0) -> list[Item]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:512, 0:512] / 511.0
    items = []
    for i in range(3):
        items.append(Item(f"uniform-noise-{i}", constant(rng.random((512, 512)))))
        coarse = Image.fromarray(rng.random((16, 16)).astype(np.float32), mode="F")
        smooth = coarse.resize((512, 512), Image.Resampling.BICUBIC)
        items.append(Item(f"smooth-noise-{i}", constant(np.asarray(smooth, dtype=np.float64))))
    disc = np.hypot(xx - 0.5, yy - 0.5)
    items.append(Item("gradient-horizontal", constant(xx)))
    items.append(Item("gradient-radial", constant(1.0 - disc)))
    checker = ((xx * 8).astype(int) + (yy * 8).astype(int)) % 2
    items.append(Item("checkerboard", constant(checker.astype(np.float64))))
    items.append(Item("bright-disc", constant((disc < 0.35) * 0.8 + 0.1)))
    return items


def nih_items(root: Path, split: str) -> list[Item]:
    out = []
    for record in NIHChestXray14Dataset(root, split=split):
        path = Path(record.images[0].path)
        out.append(Item(record.study_id, file_loader(path), record.patient_id or "", path=path))
    return out


def _patients(table: Path, image_column: str, patient_column: str) -> dict[str, str]:
    """Image -> patient, from a dataset's CSV table."""
    with table.open(newline="", encoding="utf-8") as fh:
        return {row[image_column]: row[patient_column] for row in csv.DictReader(fh)}


def hannover_items(root: Path) -> list[Item]:
    patients = _patients(root / "data.csv", "image_id", "patient_id")
    return [
        Item(p.stem, file_loader(p), patients.get(p.stem, p.stem))
        for p in sorted((root / "png").glob("*.png"))
    ]


def lateral_items(root: Path) -> list[Item]:
    patients = _patients(root / "metadata.csv", "filename", "patientid")
    return [
        Item(p.stem, photo_loader(p), patients.get(p.name, p.stem))
        for p in sorted((root / "images").iterdir())
        if p.suffix.lower() in (".png", ".jpg", ".jpeg")
    ]


class FeatureExtractor:
    """The runtime's preprocessing and the artifact's encoder, features only."""

    def __init__(self, artifact: EngineArtifact, threads: int) -> None:
        if not artifact.manifest.has_image_features:
            raise SystemExit(
                f"{artifact.root}: the encoder has no 'features' output; re-export the engine "
                "(training export) with this version of the training package"
            )
        self.spec = artifact.manifest.input
        self.backend = create_backend("onnxruntime", artifact, device="cpu", threads=threads)

    def features(self, items: list[Item]) -> Iterator[tuple[Item, np.ndarray | None, str]]:
        batch: list[tuple[Item, np.ndarray]] = []
        for item in items:
            try:
                display = normalize_intensity(item.load(), source=item.name)
                prepared = prepare_display(display, self.spec, "frontal", source=item.name)
            except ImageRejectedError as exc:
                yield item, None, f"refused by preprocessing: {exc.reason}"
                continue
            batch.append((item, stack_views(prepared, None, self.spec)))
            if len(batch) == BATCH:
                yield from self._run(batch)
                batch = []
        if batch:
            yield from self._run(batch)

    def _run(
        self, batch: list[tuple[Item, np.ndarray]]
    ) -> Iterator[tuple[Item, np.ndarray | None, str]]:
        encoded = self.backend.encode(np.stack([x for _, x in batch]).astype(np.float32))
        assert encoded.features is not None
        for (item, _), feature in zip(batch, encoded.features, strict=True):
            yield item, np.asarray(feature, dtype=np.float64), ""


def refusal_interval(outcomes: list[Outcome], threshold: float, n_resamples: int
                     ) -> dict[str, Any]:
    """Share refused by the image gate (images preprocessing refused count as refused), with
    a 95% bootstrap interval over patients (over images where patients are unknown)."""
    refused = np.array([o.distance is None or o.distance > threshold for o in outcomes], float)
    out: dict[str, Any] = {"n": len(outcomes), "refused": int(refused.sum()),
                           "rate": float(refused.mean()) if len(outcomes) else math.nan}
    if len(outcomes) >= 2:
        groups = [o.patient or o.name for o in outcomes]
        resampler = Resampler(len(outcomes), groups=groups, n_resamples=n_resamples, seed=12)
        iv = bootstrap_ci(lambda idx: {"rate": float(refused[idx].mean())}, resampler)["rate"]
        out.update(low=iv.low, high=iv.high, unit=iv.unit, n_units=resampler.n_units)
    return out


def update_manifest(root: Path, threshold: float) -> None:
    """Set the gate's threshold and statistics file and the checksums of the files the
    manifest names; nothing else in the manifest changes (the model card beside it is not
    part of the artifact's checksummed files)."""
    path = root / MANIFEST_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    data["gate"]["max_feature_distance"] = threshold
    data["gate"]["feature_stats"] = STATS_FILE
    names = EngineManifest.model_validate(data).referenced_files()
    data["files"] = {name: sha256_file(root / name) for name in sorted(names)}
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    load_artifact(root)  # the result must load and verify


def markdown(report: dict[str, Any]) -> str:
    def pct(v: float) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"

    shrinkage = (f", shrinkage {report['shrinkage']:.3f}"
                 if report["covariance"] != "diagonal" else "")
    lines = [
        f"Image gate of `{report['engine']}` {report['version']}: Mahalanobis distance of the "
        f"encoder's {report['dim']} pooled features to the NIH train features "
        f"({report['n_train']} images, {report['covariance']} covariance"
        f"{shrinkage}); "
        f"threshold {report['threshold']:.2f} = {report['percentile']}th percentile of the "
        f"{report['n_val']} validation distances.",
        "",
        "| Set | What it is | Images | Refused | Rate [95% CI] | Distance median (min-max) |",
        "|---|---|---|---|---|---|",
    ]
    for s in report["sets"]:
        r = s["refusals"]
        unit = str(r.get("unit", "")).replace("study", "image")
        ci = f" [{pct(r['low'])}, {pct(r['high'])}] (by {unit})" if "low" in r else ""
        d = s["distance"]
        dist = (f"{d['median']:.1f} ({d['min']:.1f}-{d['max']:.1f})" if d else "-")
        lines.append(f"| {s['key']} | {s['title']} | {r['n']} | {r['refused']} | "
                     f"{pct(r['rate'])}{ci} | {dist} |")
    lines += ["", "Per image (sets of fewer than 10):", ""]
    for s in report["sets"]:
        if s["refusals"]["n"] < 10:
            for o in s["images"]:
                d = "preprocessing" if o["distance"] is None else f"{o['distance']:.1f}"
                lines.append(f"- {s['key']} `{o['name']}`: {d}"
                             f"{' (' + o['note'] + ')' if o['note'] else ''}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--photos", type=Path, help="folder of natural/scientific images (PNG/JPEG)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--calibrate", action="store_true",
                   help="fit the statistics and the threshold and write them into the engine")
    p.add_argument("--dry-run", action="store_true",
                   help="with --calibrate: measure the fitted gate, leave the engine as it is")
    p.add_argument("--percentile", type=float, default=99.5)
    p.add_argument("--covariance", choices=COVARIANCES, default="diagonal",
                   help="diagonal: each feature standardised by its training spread (default; "
                   "ledoit-wolf measured as well refused most chest radiographs of other "
                   "hospitals, see the model card)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--limit", type=int, default=0, help="first N images of each set (smoke)")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    artifact = load_artifact(args.engine)
    extractor = FeatureExtractor(artifact, args.threads)
    nih, dicom = args.data / "nih", args.data / "dicom"
    pydicom_files = Path(str(pydicom.data.get_testdata_file("CT_small.dcm"))).parent
    nih_test = nih_items(nih, "test")
    chest_dicoms = sorted(p for p in dicom.glob("*.dcm") if p.name != CANINE)
    sets: list[tuple[str, str, str, list[Item]]] = [
        ("nih-train", "NIH ChestX-ray14 train split (fitted)", "chest", nih_items(nih, "train")),
        ("nih-val", "NIH validation split (calibrates the threshold)", "chest",
         nih_items(nih, "val")),
        ("nih-test", "NIH test split", "chest", nih_test),
        ("hannover", "Hannover chest radiographs (another hospital, PNG)", "chest",
         hannover_items(args.data / "hannover_covid")),
        ("chest-dicom", "real chest CR DICOMs of shared/dicom (RG1 x3, SIIM x2)", "chest",
         [Item(p.stem, dicom_loader(p), p.stem.split("_")[0]) for p in chest_dicoms]),
        ("lateral-chest", "lateral chest radiographs (chest, but not the frontal the engine "
         "reads)", "other", lateral_items(args.data / "lateral_chest")),
        ("canine-dx", "DX lateral thorax of a dog (highdicom test data)", "other",
         [Item("canine", dicom_loader(dicom / CANINE, 256), note="enlarged from 169x211")]),
        ("other-modality", "pydicom's bundled CT, MR and NM test images (not radiographs; "
         "64-128 px ones enlarged to 256)", "other",
         [Item(n, dicom_loader(pydicom_files / n, 256)) for n in PYDICOM_NON_CHEST]),
        ("synthetic", "synthetic images (noise, gradients, checkerboard, disc)", "other",
         synthetic_items()),
        ("nih-test-inverted", "NIH test images with inverted grey levels (a MONOCHROME1/2 "
         "mix-up)", "other",
         [Item(i.name, transformed(_path(i), "inverted"), i.patient) for i in nih_test]),
        ("nih-test-rot90", "NIH test images turned 90 degrees", "other",
         [Item(i.name, transformed(_path(i), "rot90"), i.patient) for i in nih_test]),
        ("nih-test-quarter", "upper-left quarter of NIH test images (shoulder, apex) enlarged",
         "other", [Item(i.name, transformed(_path(i), "quarter"), i.patient) for i in nih_test]),
    ]
    if args.photos:
        photos = sorted(p for p in args.photos.iterdir()
                        if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        sets.insert(8, ("photos", f"natural and scientific images rendered to grey "
                        f"({args.photos.name}: scikit-image sample data)", "other",
                        [Item(p.stem, photo_loader(p)) for p in photos]))

    features: dict[str, list[tuple[Item, np.ndarray | None, str]]] = {}
    for key, _, _, items in sets:
        features[key] = list(extractor.features(items[: args.limit or None]))
        print(f"{key}: {len(features[key])} images", file=sys.stderr)

    def matrix(key: str) -> np.ndarray:
        return np.stack([f for _, f, _ in features[key] if f is not None])

    stats_path = args.engine / STATS_FILE
    if args.calibrate:
        stats = FeatureStatistics.fit(matrix("nih-train"), args.covariance)
        threshold = round(float(np.percentile(stats.distances(matrix("nih-val")),
                                              args.percentile)), 4)
        if not args.dry_run:
            stats.save(stats_path)
            update_manifest(args.engine, threshold)
    else:
        gate = artifact.manifest.gate
        if gate.max_feature_distance is None:
            raise SystemExit(f"{args.engine}: no calibrated image gate; run with --calibrate")
        stats, threshold = FeatureStatistics.load(stats_path), gate.max_feature_distance

    report: dict[str, Any] = {
        "engine": artifact.manifest.name, "version": artifact.manifest.version,
        "dim": stats.dim, "n_train": stats.n_images, "shrinkage": stats.shrinkage,
        "covariance": stats.covariance,
        "threshold": threshold, "percentile": args.percentile,
        "n_val": len(matrix("nih-val")), "sets": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "distances.jsonl").open("w", encoding="utf-8") as fh:
        for key, title, kind, _ in sets:
            result = SetResult(key, title, kind)
            for item, feature, note in features[key]:
                distance = None if feature is None else float(stats.distances(feature[None])[0])
                result.outcomes.append(Outcome(item.name, item.patient, distance,
                                               note or item.note))
                fh.write(json.dumps({"set": key, "image": item.name, "distance": distance,
                                     "note": note}) + "\n")
            values = [o.distance for o in result.outcomes if o.distance is not None]
            report["sets"].append({
                "key": key, "title": title, "kind": kind,
                "refusals": refusal_interval(result.outcomes, threshold, args.bootstrap),
                "distance": {"median": float(np.median(values)), "min": float(min(values)),
                             "max": float(max(values))} if values else None,
                "images": [o.__dict__ for o in result.outcomes],
            })
    canine = pydicom.dcmread(dicom / CANINE, stop_before_pixels=True)
    report["canine_header_gate"] = list(check_image_header(canine, artifact.manifest.gate).reasons)
    (args.out / "gate.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "gate.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


def _path(item: Item) -> Path:
    assert item.path is not None
    return item.path


if __name__ == "__main__":
    raise SystemExit(main())
