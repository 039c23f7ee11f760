"""Benchmark the engine backends on the same studies (the real DICOM files).

For each available backend (each in its own process, so peak RSS is that backend's own):
per-study latency p50/p95 (preprocessing + encoder + decoding, one study at a time),
throughput with all studies batched, peak resident memory, and the speed ratio to the
PyTorch backend (the ``torch.export`` program run eagerly, op by op).

Without ``--artifact`` a random-weight engine of the chosen model size is exported first
(``cxr_small`` by default: 224x224 input, 3 decoder layers of width 256). Decoding is forced
to ``--tokens`` tokens (min_length = max_length) so every backend does the same work.

    python benchmarks/engine_backends.py [--artifact DIR] [--model cxr_small] [--repeats 5]
"""

from __future__ import annotations

import argparse
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


def _preparable(engine: Any, study: list[Any]) -> bool:
    from engine.exceptions import StudyError

    try:
        engine.prepare_study(study)
    except StudyError:
        return False
    return True


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one backend in this process and return the figures."""
    import pydicom

    from engine.runtime import create_engine

    files = sorted(Path(args.dicom_dir).glob("*.dcm"))
    studies = [[pydicom.dcmread(f)] for f in files]
    engine = create_engine(
        args.artifact,
        args.child,
        device=args.device,
        allow_test_artifact=True,
        max_batch=len(studies),
        num_beams=args.beams,
        max_length=args.tokens,
        min_length=args.tokens,
        backend_options={"threads": args.threads},
    )
    # Studies the engine refuses before the model (the canine lateral DX has no frontal chest
    # image) are not timed.
    studies = [s for s in studies if _preparable(engine, s)]
    # Random weights may decode to blank text (a StudyError): timing is what counts here.
    # Warm-up at every shape measured below (batch of all studies, then one at a time):
    # first calls at a new shape pay for lazy initialisation and allocator growth.
    engine.report_studies(studies, return_exceptions=True)
    for study in studies:
        engine.report_studies([study], return_exceptions=True)
    latencies, preprocess, model = [], [], []
    for _ in range(args.repeats):
        for study in studies:
            start = time.perf_counter()
            prepared = engine.prepare_study(study)
            middle = time.perf_counter()
            engine.infer([prepared])
            end = time.perf_counter()
            preprocess.append(middle - start)
            model.append(end - middle)
            latencies.append(end - start)
    start = time.perf_counter()
    for _ in range(args.repeats):
        engine.report_studies(studies, return_exceptions=True)
    batched = time.perf_counter() - start
    all_prepared = [engine.prepare_study(study) for study in studies]
    start = time.perf_counter()
    for _ in range(args.repeats):
        engine.infer(all_prepared)
    batched_model = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "backend": args.child,
        "runs_on": engine.backend.describe(),
        "studies": len(studies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * _percentile(latencies, 95),
        "preprocess_p50_ms": 1000 * statistics.median(preprocess),
        "model_p50_ms": 1000 * statistics.median(model),
        "model_p95_ms": 1000 * _percentile(model, 95),
        "throughput_studies_per_s": args.repeats * len(studies) / batched,
        "model_throughput_studies_per_s": args.repeats * len(studies) / batched_model,
        "peak_rss_mib": peak_kib / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=None)
    parser.add_argument("--model", default="cxr_small", help="random engine to export")
    parser.add_argument("--dicom-dir", type=Path, default=DEFAULT_DICOM)
    parser.add_argument("--backends", default="torch,onnxruntime,tensorrt")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: each backend's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=60, help="tokens decoded per study")
    parser.add_argument("--beams", type=int, default=1)
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
    results = []
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        device = args.device or ("cuda" if name == "tensorrt" else "cpu")
        reason = backend_class(name).unavailable_reason(device)
        if reason is not None:
            print(f"skipping {name} on {device}: {reason}", file=sys.stderr)
            continue
        command = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--artifact",
            str(args.artifact),
            "--dicom-dir",
            str(args.dicom_dir),
            "--repeats",
            str(args.repeats),
            "--tokens",
            str(args.tokens),
            "--beams",
            str(args.beams),
        ]
        if args.device:
            command += ["--device", args.device]
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=os.environ)
        if done.returncode != 0:
            print(f"{name} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    baseline = next((r for r in results if r["backend"] == "torch"), None)
    for r in results:
        r["model_speedup_vs_torch"] = (
            baseline["model_p50_ms"] / r["model_p50_ms"] if baseline else float("nan")
        )
        r["model_throughput_vs_torch"] = (
            r["model_throughput_studies_per_s"] / baseline["model_throughput_studies_per_s"]
            if baseline
            else float("nan")
        )

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; artifact {args.artifact}; "
        f"{args.tokens} tokens per study, beams {args.beams}, threads {args.threads or 'default'}, "
        f"{args.repeats} repeats of "
        f"{results[0]['studies'] if results else 0} studies"
    )
    print("per study, one at a time: total = preprocessing (DICOM decode, LUTs, resize) + model")
    print("batched: all studies in one call; 'x torch' = speed relative to the torch backend")
    header = (
        f"{'backend':<12}{'runs on':<30}{'total p50':>10}{'total p95':>10}{'prep p50':>9}"
        f"{'model p50':>10}{'model p95':>10}{'x torch':>8}{'batch st/s':>11}"
        f"{'model st/s':>11}{'x torch':>8}{'peak MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['backend']:<12}{r['runs_on'][:29]:<30}{r['p50_ms']:>10.1f}{r['p95_ms']:>10.1f}"
            f"{r['preprocess_p50_ms']:>9.1f}{r['model_p50_ms']:>10.1f}{r['model_p95_ms']:>10.1f}"
            f"{r['model_speedup_vs_torch']:>8.2f}{r['throughput_studies_per_s']:>11.2f}"
            f"{r['model_throughput_studies_per_s']:>11.2f}{r['model_throughput_vs_torch']:>8.2f}"
            f"{r['peak_rss_mib']:>9.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    workdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
