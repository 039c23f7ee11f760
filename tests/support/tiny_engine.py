"""Builds the tiny test engine: ``cxr_tiny`` with random weights through the real export path.

Random weights mean random text; the artifact is marked ``purpose="test"`` so the runtime
refuses it unless a caller opts in (the product must never ship it as its default).
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.artifact import DecodingDefaults, EngineArtifact, TrainingSummary
from training.export import export_artifact
from training.findings import FINDINGS
from training.models import CXRReportModel, create_model
from training.models.tokenizer import train_report_tokenizer

TINY_NAME = "cxr-tiny-random"
TINY_VERSION = "0.0.1-test"


def tiny_corpus() -> list[str]:
    """Spanish report sentences built from the finding set's names: enough to train BPE."""
    lines = ["Sin hallazgos patológicos.", "No se observan alteraciones significativas."]
    for finding in FINDINGS:
        name = finding.name_es
        lines += [
            f"Se observa {name.lower()}.",
            f"No se identifica {name.lower()}.",
            f"{name} en el hemitórax derecho, de pequeña cuantía.",
            f"Hallazgos compatibles con {name.lower()} en el lado izquierdo.",
        ]
    return lines


def build_tiny_model(seed: int = 0, num_views: int = 1) -> CXRReportModel:
    torch.manual_seed(seed)
    model = create_model(
        "cxr_tiny",
        num_findings=len(FINDINGS),
        num_locatable=sum(1 for f in FINDINGS if f.locatable),
        vocab_size=256,
        num_views=num_views,
    )
    assert isinstance(model, CXRReportModel)
    return model.eval()


def build_tiny_artifact(out_dir: Path, seed: int = 0, num_views: int = 1) -> EngineArtifact:
    model = build_tiny_model(seed, num_views)
    tokenizer = train_report_tokenizer(tiny_corpus(), vocab_size=256)
    return export_artifact(
        model,
        tokenizer,
        out_dir,
        name=TINY_NAME,
        version=TINY_VERSION,
        findings=FINDINGS,
        decoding=DecodingDefaults(num_beams=1, max_length=24, min_length=4),
        training=TrainingSummary(data="none: random weights", notes="test artifact"),
        purpose="test",
        description="Random-weight test engine; never use for patients.",
    )


_BUILT: dict[tuple[int, int], EngineArtifact] = {}


def session_tiny_artifact(base: Path, seed: int = 0, num_views: int = 1) -> EngineArtifact:
    """Build once per test session (per seed and view count) under ``base``; reuse after."""
    key = (seed, num_views)
    if key not in _BUILT:
        _BUILT[key] = build_tiny_artifact(base / f"tiny-s{seed}-v{num_views}", seed, num_views)
    return _BUILT[key]
