"""Training throughput per model size: images/s (encoder, finding and box heads, forward and
backward), report tokens/s (decoder language model with the findings prompt), and peak memory.

Each configuration runs in its own process, so the peak resident memory (CPU) or peak CUDA
memory is that configuration's own. Inputs are random tensors of the model's shapes (throughput
does not depend on pixel values); the steps are the loop's own objectives and AdamW updates.
The first ``--warmup`` steps are not timed.

    python benchmarks/training_throughput.py [--models cxr_tiny,cxr_small] [--encoders cnn]
        [--batch 16] [--report-batch 32] [--tokens 96] [--steps 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One configuration, in this process."""
    import torch

    from training.findings import FINDINGS
    from training.models import CXRReportModel, create_model
    from training.train import objectives
    from training.train.recipe import BoxObjective, FindingsObjective

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    nih = [f for f in FINDINGS if f.key in {"atelectasis", "cardiomegaly", "pleural_effusion",
                                             "infiltration", "mass", "nodule", "pneumonia",
                                             "pneumothorax", "consolidation", "edema",
                                             "emphysema", "fibrosis", "pleural_thickening",
                                             "hernia", "no_finding"}]
    locatable = sum(1 for f in nih if f.locatable)
    model = create_model(args.model, num_findings=len(nih), num_locatable=locatable,
                         vocab_size=2000, encoder=args.encoder, decoder_memory=("findings",))
    assert isinstance(model, CXRReportModel)
    model.to(device).train()
    size = model.config.image_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(args.batch, model.config.num_views, size, size, device=device)
    labels = (torch.rand(args.batch, len(nih), device=device) < 0.2).float()
    mask = torch.ones_like(labels)
    boxes = torch.tensor([0.2, 0.2, 0.6, 0.6], device=device).expand(args.batch, locatable, 4)
    box_mask = torch.ones(args.batch, locatable, device=device)
    tokens = torch.randint(4, 2000, (args.report_batch, min(args.tokens,
                           model.config.max_positions)), device=device)
    states = torch.randint(0, 3, (args.report_batch, len(nih)), device=device)
    amp = device.type == "cuda"
    dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16

    def image_step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            _, logits, predicted, _ = model.finding_logits(images)
            loss = objectives.findings_loss(logits, labels, mask, FindingsObjective())
            loss = loss + objectives.box_loss(predicted, boxes, box_mask, BoxObjective())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def report_step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            logits = model.decode_teacher_forced(tokens[:, :-1], None, states)
            loss = objectives.lm_loss(logits, tokens[:, 1:], pad_id=0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(step: Any) -> float:
        for _ in range(args.warmup):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / args.steps

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    image_seconds = timed(image_step)
    report_seconds = timed(report_step)
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {
        "model": args.model,
        "encoder": args.encoder,
        "image_size": size,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "images_per_s": round(args.batch / image_seconds, 2),
        "tokens_per_s": round(int(tokens[:, 1:].numel()) / report_seconds, 1),
        "peak_memory_mb": round(peak_mb, 1),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cxr_tiny,cxr_small,cxr_base")
    parser.add_argument("--encoders", default="cnn", help="comma separated: cnn, densenet121, "
                        "resnet50, vit_small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--report-batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--encoder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.model:  # the child process: one configuration
        print(json.dumps(measure(args)))
        return 0
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"batch {args.batch} images / {args.report_batch} reports x {args.tokens} tokens")
    print(f"{'model':<10} {'encoder':<12} {'size':>5} {'params M':>9} {'images/s':>9} "
          f"{'tokens/s':>9} {'peak MB':>9}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    common = ["--batch", str(args.batch), "--report-batch", str(args.report_batch), "--tokens",
              str(args.tokens), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--threads", str(args.threads), "--device", args.device]
    for model in args.models.split(","):
        for encoder in args.encoders.split(","):
            proc = subprocess.run(
                [sys.executable, __file__, "--model", model, "--encoder", encoder, *common],
                capture_output=True, text=True, env=env, cwd=REPO,
            )
            if proc.returncode != 0:
                print(f"{model:<10} {encoder:<12} failed: {proc.stderr.strip()[-300:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{r['model']:<10} {r['encoder']:<12} {r['image_size']:>5} "
                  f"{r['parameters_m']:>9} {r['images_per_s']:>9} {r['tokens_per_s']:>9} "
                  f"{r['peak_memory_mb']:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
