"""Reports of an engine's decoder on the IU X-Ray test split with the findings given.

The shared IU X-Ray copy has reports but no images, so the engine's report writer is scored
with each test report's own findings as its prompt: the English labeler reads the report (as
training builds the prompt, ``text.prompt_labels = "labeler"``), the states (absent, uncertain,
present; unspoken reads as absent, "no finding" absent when another finding is present) go
through the engine's prompt table, and the engine's decoder writes the report with its
manifest's decoding settings. The text is the decoder's own (the runtime's check against the
coded findings is not applied: there are no image findings here); the findings section
("Hallazgos") is scored, as the R2Gen protocol does. Then score it::

    python scripts/iu_findings_given.py --engine engines/cxr-unpaired-es --out results/iu
    training evaluate --predictions results/iu/predictions.jsonl --dataset iu_xray \\
        --root ../shared/data/iu_xray --split test --lang es --out results/iu
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from engine.decoding import decoder_memory, generate
from engine.labeler import get_labeler
from engine.runtime import create_engine
from training.data.iu_xray import IUXRayDataset
from training.train.data import prompt_states, with_implied_no_finding


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", type=Path, required=True)
    p.add_argument("--iu", type=Path, default=Path("../shared/data/iu_xray"))
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int, default=0, help="first N studies only (smoke)")
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args(argv)

    engine = create_engine(args.engine, "onnxruntime")
    if engine.prompt is None or "image" in engine.artifact.manifest.decoder.memory:
        print("error: this engine's decoder needs image tokens; findings alone cannot prompt it",
              file=sys.stderr)
        return 2
    keys = [f.key for f in engine.artifact.manifest.findings]
    records = [r for r in IUXRayDataset(args.iu, split=args.split) if r.report("en")]
    if args.limit:
        records = records[: args.limit]
    labeler = get_labeler("en")
    states = np.array([
        prompt_states(with_implied_no_finding(labeler.label(r.report("en"), sections=False)),
                      keys)
        for r in records
    ], dtype=np.int64)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        for start in range(0, len(records), args.batch):
            rows = list(range(start, min(start + args.batch, len(records))))
            cross = decoder_memory(engine.artifact.manifest.decoder.memory, None,  # type: ignore[arg-type]
                                   rows, engine.prompt, states)
            ids = generate(engine.backend.decode_step, engine.backend.empty_cache, cross,
                           engine.decoding, engine.rules)
            for row, seq in zip(rows, ids, strict=True):
                sections = engine.tokenizer.sections(seq)
                by_name = dict(sections)
                fh.write(json.dumps({
                    "study_id": records[row].study_id,
                    # The R2Gen protocol scores the findings section.
                    "report": by_name.get("Hallazgos") or " ".join(by_name.values()),
                    "sections": by_name,
                    "prompt": dict(zip(keys, (int(s) for s in states[row]), strict=True)),
                }, ensure_ascii=False) + "\n")
    print(f"{len(records)} reports written to {args.out / 'predictions.jsonl'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
