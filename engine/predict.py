"""``python -m engine.predict``: report a list of studies given as image files, one JSON line each.

The bridge between a dataset and the engine for evaluation: ``training evaluate --engine`` writes
a study list and runs this module in a subprocess, so training never imports the runtime.

Study list (JSON Lines, one study a line; relative paths are relative to the list's folder)::

    {"study_id": "CXR1_1_IM-0001", "images": [{"path": "images/CXR1_1_IM-0001/0.png",
                                               "view": "PA"}, {"path": "...", "view": null}]}

Predictions (JSON Lines, in the study list's order)::

    {"study_id": ..., "report": "all sections' text in reading order",
     "sections": {"Hallazgos": ...}, "findings": {"cardiomegaly": "absent", ...},
     "probabilities": {"cardiomegaly": 0.12, ...}, "engine": {"name", "version", "sha256"}}

A study the engine cannot report becomes ``{"study_id", "error", "error_type", "engine"}`` and the
run goes on; the exit status is 0 when the run completed, 2 when it could not start.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from engine.exceptions import EngineError, StudyError
from engine.result import StudyReport
from engine.runtime import Engine, ImageStudy, create_engine

logger = logging.getLogger(__name__)

_FIX_LIST = (
    'write one JSON object per line: {"study_id": "...", "images": [{"path": "...", '
    '"view": "PA"}]}'
)


def read_study_list(path: str | Path) -> list[ImageStudy]:
    """The studies of a study list file; raises ValueError naming the line at fault."""
    path = Path(path)
    studies: list[ImageStudy] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where} is not JSON ({exc}); {_FIX_LIST}") from exc
        if not isinstance(item, dict) or not item.get("study_id"):
            raise ValueError(f"{where} has no 'study_id'; {_FIX_LIST}")
        images = item.get("images")
        if not isinstance(images, list) or not all(
            isinstance(i, dict) and i.get("path") for i in images
        ):
            raise ValueError(f"{where}: 'images' must be a list of {{path, view}}; {_FIX_LIST}")
        study_id = str(item["study_id"])
        if study_id in seen:
            raise ValueError(f"{where}: study {study_id} appears twice; list each study once")
        seen.add(study_id)
        studies.append(
            ImageStudy(
                study_id,
                tuple((path.parent / str(i["path"]), i.get("view")) for i in images),
            )
        )
    if not studies:
        raise ValueError(f"{path}: holds no study; {_FIX_LIST}")
    return studies


def prediction_line(
    study_id: str, outcome: StudyReport | StudyError, engine: Engine
) -> dict[str, Any]:
    """One predictions line: the report as the engine produced it, or the study's error."""
    identity = engine.identity
    who = {"name": identity.name, "version": identity.version, "sha256": identity.sha256}
    if isinstance(outcome, StudyError):
        return {
            "study_id": study_id,
            "error": str(outcome),
            "error_type": type(outcome).__name__,
            "engine": who,
        }
    return {
        "study_id": study_id,
        "report": " ".join(text for _, text in outcome.sections),
        "sections": dict(outcome.sections),
        "findings": {f.key: f.presence for f in outcome.findings},
        "probabilities": {f.key: round(f.probability, 6) for f in outcome.findings},
        "engine": who,
    }


def _chunks(items: Sequence[ImageStudy], size: int) -> Iterator[Sequence[ImageStudy]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict(engine: Engine, studies: Sequence[ImageStudy], out: TextIO) -> tuple[int, int]:
    """Report ``studies`` a batch at a time (only one batch of images in memory), writing one
    line per study as each batch finishes; returns (reported, failed)."""
    reported = failed = 0
    for chunk in _chunks(studies, engine.max_batch):
        outcomes = engine.report_image_studies(chunk, return_exceptions=True)
        for study, outcome in zip(chunk, outcomes, strict=True):
            line = prediction_line(study.study_id, outcome, engine)
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            if isinstance(outcome, StudyError):
                failed += 1
            else:
                reported += 1
        out.flush()
        logger.info("%d of %d studies done", reported + failed, len(studies))
    return reported, failed


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine.predict",
        description="Report studies given as PNG/JPEG files with an engine artifact; writes "
        "one JSON line per study (report, sections, findings, or the study's error).",
    )
    p.add_argument("--engine", type=Path, required=True, help="the engine artifact's folder")
    p.add_argument("--studies", type=Path, required=True, help="study list (JSON Lines)")
    p.add_argument("--out", type=Path, required=True, help="predictions file to write (JSONL)")
    p.add_argument("--backend", default="onnxruntime", help="onnxruntime, torch or tensorrt")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: the backend's)")
    p.add_argument("--max-batch", type=int, default=8, help="studies per batch (default: 8)")
    p.add_argument("--allow-test-artifact", action="store_true",
                   help="accept a random-weight test artifact (tests only)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        studies = read_study_list(args.studies)
        engine = create_engine(
            args.engine,
            args.backend,
            device=args.device,
            allow_test_artifact=args.allow_test_artifact,
            max_batch=args.max_batch,
        )
    except (OSError, ValueError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        reported, failed = predict(engine, studies, fh)
    print(f"{reported} studies reported, {failed} failed; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
