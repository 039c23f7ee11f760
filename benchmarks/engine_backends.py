"""Benchmark the engine backends on the same studies (the real DICOM files).

For each available backend (each in its own process, so peak RSS is that backend's own):
per-study latency p50/p95 (reading the files, the gate, view selection, preprocessing,
encoder, decoding and the writer, one study at a time) with a breakdown, throughput with all
studies batched, peak resident memory, and the speed ratio to the PyTorch backend (the
``torch.export`` program run eagerly, op by op).

Studies (``--study-kind``), all from the real files of ``--dicom-dir``, each read from its
bytes inside the timed region as a worker reads its spool:

- ``one``: each file alone (the canine DX is refused by the gate and not timed);
- ``frontal-lateral``: each human frontal with a real lateral chest radiograph
  (``../shared/data/lateral_chest``) wrapped as a CR of the same study and enlarged to the
  frontal's matrix (12-bit), as a lateral CR of the same room would be;
- ``two-frontals``: pairs of different frontal files put in one study.

``--no-view-header`` removes every view signal from the headers, so the pixels choose the
views (each image decoded for the view model): the slowest path a study can take.

Without ``--artifact`` a random-weight engine of the chosen model size is exported first
(``cxr_small`` by default: 224x224 input, 3 decoder layers of width 256). Decoding is forced
to ``--tokens`` tokens (min_length = max_length) when given.

    python benchmarks/engine_backends.py [--artifact DIR] [--model cxr_small] [--repeats 5]
        [--study-kind one,frontal-lateral,two-frontals] [--no-view-header] [--threads 2]

Without ``--tokens`` the artifact's own decoding settings apply (what the node runs); with it,
decoding is forced to that many tokens so every backend does the same work. The load average
(``os.getloadavg``) is printed with the figures: on a shared machine they depend on it.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DICOM = REPO.parent / "shared" / "data" / "dicom"
DEFAULT_LATERALS = REPO.parent / "shared" / "data" / "lateral_chest" / "images"
STUDY_KINDS = ("one", "frontal-lateral", "two-frontals")
# Every header element view selection reads (engine.views): removed by --no-view-header.
VIEW_KEYWORDS = (
    "ViewPosition",
    "ViewCodeSequence",
    "ImageLaterality",
    "PatientOrientation",
    "SeriesDescription",
    "ProtocolName",
    "ImageComments",
    "AcquisitionDeviceProcessingDescription",
)

logger = logging.getLogger("benchmarks.engine_backends")


def build_random_artifact(model_name: str, out: Path) -> Path:
    """Export ``model_name`` with random weights (never a product engine: purpose=test)."""
    import torch

    from engine.artifact import DecodingDefaults, TrainingSummary
    from training.export import export_artifact
    from training.findings import FINDINGS
    from training.models import create_model
    from training.models.tokenizer import train_report_tokenizer

    torch.manual_seed(0)
    corpus = [
        f"{verb} {f.name_es.lower()} {where}."
        for f in FINDINGS
        for verb in ("Se observa", "No se identifica", "Sin signos de", "Compatible con")
        for where in ("en el hemitórax derecho", "en el hemitórax izquierdo", "bilateral", "")
    ]
    tokenizer = train_report_tokenizer(corpus, vocab_size=1024)
    model = create_model(
        model_name,
        num_findings=len(FINDINGS),
        num_locatable=sum(1 for f in FINDINGS if f.locatable),
        vocab_size=1024,
    )
    export_artifact(
        model,  # type: ignore[arg-type]
        tokenizer,
        out,
        name=f"{model_name}-random-benchmark",
        version="0",
        findings=FINDINGS,
        decoding=DecodingDefaults(max_length=60),
        training=TrainingSummary(data="none: random weights", notes="benchmark only"),
        purpose="test",
    )
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _encode(ds: Any) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _lateral_like(frontal: Any, image_path: Path) -> Any:
    """A lateral CR of the frontal's study: the frontal's header, a real lateral's pixels
    enlarged to the frontal's matrix (12 bits stored), MONOCHROME2, View Position LL."""
    import numpy as np
    from PIL import Image
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    with Image.open(image_path) as img:
        grey = img.convert("L").resize((int(frontal.Columns), int(frontal.Rows)), Image.BILINEAR)
    pixels = (np.asarray(grey, dtype=np.uint16) * 16).astype(np.uint16)
    ds = copy.deepcopy(frontal)
    for keyword in ("VOILUTSequence", "WindowCenter", "WindowWidth", "RescaleSlope",
                    "RescaleIntercept", "ModalityLUTSequence"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel = 1
    ds.PixelData = pixels.tobytes()
    for keyword in VIEW_KEYWORDS:  # the frontal's own view signals ("PA" in its texts)
        if keyword in ds:
            delattr(ds, keyword)
    ds.ViewPosition = "LL"
    ds.PatientOrientation = ["A", "F"]
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.InstanceNumber = int(getattr(frontal, "InstanceNumber", 0) or 0) + 1
    return ds


def build_studies(
    dicom_dir: Path, lateral_dir: Path, kind: str, strip_views: bool
) -> list[tuple[str, list[bytes]]]:
    """The studies of ``kind`` (module docstring) as (name, file bytes of each image)."""
    import pydicom
    from pydicom.uid import generate_uid

    from engine.views import classify_view

    files = sorted(dicom_dir.glob("*.dcm"))
    datasets = {f.name: pydicom.dcmread(f) for f in files}
    frontals = {n: ds for n, ds in datasets.items() if classify_view(ds).view == "frontal"}
    studies: list[tuple[str, list[Any]]] = []
    if kind == "one":
        studies = [(n, [ds]) for n, ds in datasets.items()]
    elif kind == "frontal-lateral":
        laterals = sorted(lateral_dir.glob("*.jpg"))
        if not laterals:
            raise SystemExit(f"no lateral images in {lateral_dir}")
        for i, (name, ds) in enumerate(frontals.items()):
            lateral = _lateral_like(ds, laterals[i % len(laterals)])
            studies.append((f"{name}+{laterals[i % len(laterals)].name}", [ds, lateral]))
    elif kind == "two-frontals":
        names = list(frontals)
        for i, name in enumerate(names):
            other = names[(i + len(names) // 2) % len(names)]
            second = copy.deepcopy(frontals[other])
            second.StudyInstanceUID = frontals[name].StudyInstanceUID
            second.SOPInstanceUID = generate_uid()
            second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
            # After the first, so view selection analyses the first (lowest Instance Number).
            second.InstanceNumber = int(getattr(frontals[name], "InstanceNumber", 0) or 0) + 1
            studies.append((f"{name}+{other}", [frontals[name], second]))
    else:
        raise SystemExit(f"unknown study kind {kind!r}: choose from {', '.join(STUDY_KINDS)}")
    out = []
    for name, images in studies:
        encoded = []
        for ds in images:
            if strip_views:
                ds = copy.deepcopy(ds)
                for keyword in VIEW_KEYWORDS:
                    if keyword in ds:
                        delattr(ds, keyword)
            encoded.append(_encode(ds))
        out.append((name, encoded))
    return out


def _read(study: list[bytes]) -> list[Any]:
    import pydicom

    return [pydicom.dcmread(io.BytesIO(data)) for data in study]


class _Timer:
    """Adds the time spent in a wrapped callable to ``total``."""

    def __init__(self, function: Any) -> None:
        self.function = function
        self.total = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.total += time.perf_counter() - start


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one backend in this process and return the figures."""
    import engine.runtime as runtime
    from engine.exceptions import StudyError
    from engine.runtime import create_engine

    raw = build_studies(Path(args.dicom_dir), Path(args.lateral_dir), args.study_kind,
                        args.no_view_header)
    if not raw:
        raise SystemExit(f"no DICOM study in {args.dicom_dir}")
    forced = {"max_length": args.tokens, "min_length": args.tokens} if args.tokens else {}
    engine = create_engine(
        args.artifact,
        args.child,
        device=args.device,
        allow_test_artifact=True,
        max_batch=len(raw),
        backend_options={"threads": args.threads},
        **forced,
        **({"num_beams": args.beams} if args.beams else {}),
    )
    # Studies the engine refuses before the model (the canine lateral DX has no frontal chest
    # image, and the gate refuses it) are not timed.
    studies, names = [], []
    for name, study in raw:
        try:
            engine.prepare_study(_read(study))
        except StudyError as exc:
            print(f"not timed: {name}: {exc}", file=sys.stderr)
            continue
        studies.append(study)
        names.append(name)
    if not studies:
        raise SystemExit("no study could be prepared")
    # Instrument the parts of the model step (same objects the engine calls).
    encode = _Timer(engine.backend.encode)
    engine.backend.encode = encode  # type: ignore[method-assign]
    writer = _Timer(runtime.choose_text)
    runtime.choose_text = writer  # type: ignore[assignment]
    # Random weights may decode to blank text (a StudyError): timing is what counts here.
    # Warm-up at every shape measured below (batch of all studies, then one at a time):
    # first calls at a new shape pay for lazy initialisation and allocator growth.
    engine.report_studies([_read(s) for s in studies], return_exceptions=True)
    for study in studies:
        engine.report_studies([_read(study)], return_exceptions=True)
    parts: dict[str, list[float]] = {
        k: [] for k in ("total", "read", "prepare", "model", "encoder", "decoding", "writer",
                        "cpu")
    }
    per_study: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name, study in zip(names, studies, strict=True):
            encode.total = writer.total = 0.0
            cpu = time.process_time()
            start = time.perf_counter()
            datasets = _read(study)
            read = time.perf_counter()
            prepared = engine.prepare_study(datasets)
            middle = time.perf_counter()
            engine.infer([prepared])
            end = time.perf_counter()
            parts["cpu"].append(time.process_time() - cpu)
            parts["total"].append(end - start)
            per_study[name].append(end - start)
            parts["read"].append(read - start)
            parts["prepare"].append(middle - read)
            parts["model"].append(end - middle)
            parts["encoder"].append(encode.total)
            parts["writer"].append(writer.total)
            parts["decoding"].append(end - middle - encode.total - writer.total)
    start = time.perf_counter()
    for _ in range(args.repeats):
        engine.report_studies([_read(s) for s in studies], return_exceptions=True)
    batched = time.perf_counter() - start
    all_prepared = [engine.prepare_study(_read(study)) for study in studies]
    start = time.perf_counter()
    for _ in range(args.repeats):
        engine.infer(all_prepared)
    batched_model = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result: dict[str, Any] = {
        "backend": args.child,
        "runs_on": engine.backend.describe(),
        "study_kind": args.study_kind + (" (no view header)" if args.no_view_header else ""),
        "studies": len(studies),
        "images_per_study": statistics.mean(len(s) for s in studies),
        "p50_ms": 1000 * statistics.median(parts["total"]),
        "p95_ms": 1000 * _percentile(parts["total"], 95),
        "model_p95_ms": 1000 * _percentile(parts["model"], 95),
        "throughput_studies_per_s": args.repeats * len(studies) / batched,
        "model_throughput_studies_per_s": args.repeats * len(studies) / batched_model,
        "peak_rss_mib": peak_kib / 1024,
        "load_average": os.getloadavg(),
        # Which file a figure comes from matters: a JPEG 2000 CR decodes ~10x slower.
        "per_study_p50_ms": {n: 1000 * statistics.median(v) for n, v in per_study.items()},
    }
    for key, values in parts.items():
        if key != "total":
            result[f"{'preprocess' if key == 'prepare' else key}_p50_ms"] = (
                1000 * statistics.median(values)
            )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=None)
    parser.add_argument("--model", default="cxr_small", help="random engine to export")
    parser.add_argument("--dicom-dir", type=Path, default=DEFAULT_DICOM)
    parser.add_argument("--lateral-dir", type=Path, default=DEFAULT_LATERALS)
    parser.add_argument(
        "--study-kind", default="one", help=f"comma-separated, from {', '.join(STUDY_KINDS)}"
    )
    parser.add_argument("--no-view-header", action="store_true", help="pixels choose the views")
    parser.add_argument("--backends", default="torch,onnxruntime,tensorrt")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: each backend's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--tokens",
        type=int,
        default=None,
        help="force this many decoded tokens per study (default: the artifact's decoding "
        "settings; 60 for the random engine)",
    )
    parser.add_argument("--beams", type=int, default=None, help="default: the artifact's")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: library default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.child:
        print(json.dumps(run_child(args)))
        return 0

    from engine.backends import backend_class

    workdir = tempfile.TemporaryDirectory(prefix="engine-bench-")
    if args.artifact is None:
        print(f"exporting a random-weight {args.model} engine ...", file=sys.stderr)
        logging.getLogger("onnx_ir").setLevel(logging.WARNING)
        args.artifact = build_random_artifact(args.model, Path(workdir.name) / "engine")
        args.tokens = args.tokens or 60
    kinds = [k.strip() for k in args.study_kind.split(",") if k.strip()]
    results = []
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        device = args.device or ("cuda" if name == "tensorrt" else "cpu")
        reason = backend_class(name).unavailable_reason(device)
        if reason is not None:
            print(f"skipping {name} on {device}: {reason}", file=sys.stderr)
            continue
        for kind in kinds:
            command = [
                sys.executable,
                __file__,
                "--child",
                name,
                "--artifact",
                str(args.artifact),
                "--dicom-dir",
                str(args.dicom_dir),
                "--lateral-dir",
                str(args.lateral_dir),
                "--study-kind",
                kind,
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
            ]
            for flag, value in (("--tokens", args.tokens), ("--beams", args.beams)):
                if value:
                    command += [flag, str(value)]
            if args.no_view_header:
                command.append("--no-view-header")
            if args.device:
                command += ["--device", args.device]
            done = subprocess.run(
                command, capture_output=True, text=True, check=False, env=os.environ
            )
            if done.returncode != 0:
                print(f"{name} ({kind}) failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for r in results:
        baseline = next(
            (b for b in results if b["backend"] == "torch" and b["study_kind"] == r["study_kind"]),
            None,
        )
        r["model_speedup_vs_torch"] = (
            baseline["model_p50_ms"] / r["model_p50_ms"] if baseline else float("nan")
        )
        r["model_throughput_vs_torch"] = (
            r["model_throughput_studies_per_s"] / baseline["model_throughput_studies_per_s"]
            if baseline
            else float("nan")
        )

    tokens = f"{args.tokens} tokens forced" if args.tokens else "the artifact's decoding settings"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; artifact {args.artifact}; "
        f"{tokens}, threads {args.threads or 'default'}, {args.repeats} repeats"
    )
    print(
        "per study, one at a time: total = read (dcmread of the bytes) + prep (gate, views, "
        "preprocessing) + model (encoder + decoding + writer); load = 1-minute load average "
        "at the end of each run; cpu = CPU time of the process per study (all its threads): "
        "on a shared machine, an upper bound of what the wall time would be without the load"
    )
    print("batched: all studies in one call; 'x torch' = speed relative to the torch backend")
    header = (
        f"{'backend':<12}{'studies':<30}{'n':>3}{'total p50':>10}{'total p95':>10}"
        f"{'read':>6}{'prep':>6}{'model':>7}{'enc':>6}{'dec':>6}{'writer':>7}"
        f"{'model p95':>10}{'x torch':>8}{'batch st/s':>11}{'peak MiB':>9}{'cpu p50':>8}"
        f"{'load':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['backend']:<12}{r['study_kind'][:29]:<30}{r['studies']:>3}"
            f"{r['p50_ms']:>10.1f}{r['p95_ms']:>10.1f}{r['read_p50_ms']:>6.0f}"
            f"{r['preprocess_p50_ms']:>6.0f}{r['model_p50_ms']:>7.0f}{r['encoder_p50_ms']:>6.0f}"
            f"{r['decoding_p50_ms']:>6.0f}{r['writer_p50_ms']:>7.1f}{r['model_p95_ms']:>10.1f}"
            f"{r['model_speedup_vs_torch']:>8.2f}{r['throughput_studies_per_s']:>11.2f}"
            f"{r['peak_rss_mib']:>9.0f}{r.get('cpu_p50_ms', float('nan')):>8.0f}"
            f"{r['load_average'][0]:>6.2f}"
        )
    for r in results:
        if r.get("per_study_p50_ms"):
            print(f"{r['backend']} {r['study_kind']}, per study p50 ms: " + ", ".join(
                f"{n} {v:.0f}" for n, v in r["per_study_p50_ms"].items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    workdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
