"""English-to-Spanish transfer of the report decoder: quality against the number of Spanish
training reports, fine-tuned from an English decoder (frozen or unfrozen) or trained on Spanish
from scratch.

Every run is the text path (``config/training/decoder.toml``: the decoder alone on IU X-Ray
reports with their findings prompt) with the first N Spanish training reports
(``data.max_train_reports``) and the same number of optimizer steps. Arms:

- ``scratch``: Spanish from random weights;
- ``frozen``: from the English decoder, training only the token embeddings (tied to the
  output projection) and the cross-attention (:data:`FROZEN_TRAINABLE`); self-attention,
  feed-forward, positions and the findings prompt stay as English training left them;
- ``unfrozen``: from the English decoder, everything trains.

The Spanish tokenizer is trained on the run's own N reports, so it differs from the English
one: the embedding rows of the tokens both vocabularies share (special and section tokens,
punctuation, digits, identical sub-words) are copied, the others start fresh
(:func:`training.train.checkpoint.load_matching`). Each best checkpoint (validation LM loss) is
scored on the IU X-Ray test split with the findings given (:mod:`training.train.decoder_eval`).
Every run keeps its outputs in ``OUT/<arm>-n<N>/`` (``eval.json`` beside the checkpoints); a
finished cell is not rerun. ::

    training train config/training/decoder.toml --set text.language="en" \\
        --set run.out_dir=/work/runs/decoder-en-pretrain
    python scripts/transfer_curve.py --english /work/runs/decoder-en-pretrain/checkpoints/best.pt \\
        --out /work/runs/decoder-transfer --sizes 100 300 1000 0 --steps 200 --jobs 2
    python scripts/transfer_curve.py evaluate CHECKPOINT OUT.json --baselines
    python scripts/transfer_curve.py engine --encoder ENGINE.pt --decoder DECODER.pt \\
        --like engines/cxr-unpaired-es --out /work/runs/decoder-engine

Nothing from IU X-Ray is written besides figures: its licence forbids publishing the reports or
their translation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "config" / "training" / "decoder.toml"
ARMS = ("scratch", "frozen", "unfrozen")
#: What the frozen arm trains (``model.trainable``).
FROZEN_TRAINABLE = ("decoder.embed.*", "decoder.layers.*.cross_attn.*")
ENGINE_FINDINGS = ("no_finding", "pneumonia", "infiltration", "atelectasis", "pleural_effusion",
                   "edema")


def evaluate(checkpoint: Path, out: Path, *, baselines: bool = False,
             iu: Path = Path("../shared/data/iu_xray"), resamples: int = 1000) -> dict[str, Any]:
    """Score one checkpoint (and, with ``baselines``, the constant and structured texts)."""
    from training.train.decoder_eval import (
        baseline_texts,
        checked_texts,
        findings_given,
        generate_texts,
        load_checkpoint_model,
        score_texts,
    )

    model, tokenizer = load_checkpoint_model(checkpoint)
    given = findings_given(iu, ENGINE_FINDINGS)
    generated = generate_texts(model, tokenizer, given.states)
    results = {"decoder": score_texts(given, generated, n_resamples=resamples)}
    if baselines:
        others = baseline_texts(given)
        checked = checked_texts(given, generated, others["structured"])
        results["decoder_checked"] = score_texts(given, checked, n_resamples=resamples)
        for name, texts in others.items():
            results[name] = score_texts(given, texts, n_resamples=resamples)
    results["checkpoint"] = str(checkpoint)  # type: ignore[assignment]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def run_cell(arm: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one (arm, N) cell and score it; a cell with ``eval.json`` is read back."""
    out = args.out / f"{arm}-n{size or 'all'}"
    done = out / "eval.json"
    if not done.is_file():
        sets = [
            f"data.max_train_reports={size}",
            f"optim.max_steps={args.steps}",
            "optim.epochs=100000",  # the step budget decides; the schedule spans it
            "optim.warmup_steps=20",
            "run.threads=1",
            "run.progress=false",
            f"run.out_dir={out}",
            "run.early_stopping.patience=1000",
            f"data.max_val_reports={args.val_reports}",
            *args.set,
        ]
        if arm != "scratch":
            sets.append(f'model.init_checkpoint="{args.english}"')
        if arm == "frozen":
            sets.append("model.trainable=" + json.dumps(list(FROZEN_TRAINABLE)))
        command = [sys.executable, "-m", "training.cli", "train", str(RECIPE)]
        for item in sets:
            command += ["--set", item]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        out.mkdir(parents=True, exist_ok=True)
        with (out / "train.log").open("w") as log:
            subprocess.run(command, check=True, cwd=REPO, env=env, stdout=log, stderr=log)
        subprocess.run(
            [sys.executable, __file__, "evaluate", str(out / "checkpoints" / "best.pt"),
             str(done), "--resamples", str(args.resamples)],
            check=True, cwd=REPO, env=env,
        )
    return {**json.loads(done.read_text())["decoder"], "arm": arm, "n": size}


def build_engine(encoder: Path, decoder: Path, like: Path, out: Path, version: str) -> Path:
    """An engine artifact with ``like``'s encoder checkpoint and a text-path decoder: the
    manifest's calibrated thresholds, input spec, gate and reported regions are ``like``'s;
    the writer is the neural one (the runtime's check always on)."""
    from engine.artifact import load_artifact, write_manifest
    from training.export import export_artifact
    from training.findings import get_finding
    from training.train.checkpoint import with_decoder

    shipped = load_artifact(like).manifest
    model, tokenizer = with_decoder(encoder, decoder)
    thresholds = {f.key: (f.threshold_present, f.threshold_absent) for f in shipped.findings}
    artifact = export_artifact(
        model, tokenizer, out, name=shipped.name, version=version,
        findings=[get_finding(f.key) for f in shipped.findings], thresholds=thresholds,
        input_spec=shipped.input, purpose=shipped.purpose,
        training=shipped.training.model_copy(update={
            "notes": f"{shipped.training.notes}; decoder from the text path: {decoder}"}),
        description=f"{shipped.description} Neural report writer (candidate).",
        languages=shipped.languages,
    )
    regions = {f.key: f.report_region for f in shipped.findings}
    findings = tuple(
        f.model_copy(update={"report_region": regions[f.key]}) for f in artifact.manifest.findings
    )
    manifest = artifact.manifest.model_copy(
        update={"report_writer": "neural", "gate": shipped.gate, "findings": findings}
    )
    write_manifest(out, manifest)
    return out


def _fmt(value: list[float]) -> str:
    return f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| N Spanish reports | arm | distinct | micro F1 vs prompt | macro F1 vs prompt "
        "| BLEU-4 | CIDEr |",
        "|---|---|---:|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["n"] or 10**9, ARMS.index(r["arm"]))):
        lines.append(
            f"| {r['n'] or 'all'} | {r['arm']} | {r['distinct']} | {_fmt(r['micro_f1'])} | "
            f"{_fmt(r['macro_f1'])} | {_fmt(r['bleu4'])} | {_fmt(r['cider'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "evaluate":
        p = argparse.ArgumentParser(prog="transfer_curve.py evaluate")
        p.add_argument("checkpoint", type=Path)
        p.add_argument("out", type=Path)
        p.add_argument("--baselines", action="store_true")
        p.add_argument("--resamples", type=int, default=1000)
        e = p.parse_args(argv[1:])
        results = evaluate(e.checkpoint, e.out, baselines=e.baselines, resamples=e.resamples)
        for name, r in results.items():
            if isinstance(r, dict):
                print(f"{name}: distinct {r['distinct']}, micro F1 {_fmt(r['micro_f1'])}, "
                      f"macro F1 {_fmt(r['macro_f1'])}, BLEU-4 {_fmt(r['bleu4'])}, "
                      f"CIDEr {_fmt(r['cider'])}, check replaced {_fmt(r['check_replaced'])}")
        return 0
    if argv and argv[0] == "engine":
        p = argparse.ArgumentParser(prog="transfer_curve.py engine")
        p.add_argument("--encoder", type=Path, required=True, help="the engine's checkpoint")
        p.add_argument("--decoder", type=Path, required=True, help="a text-path checkpoint")
        p.add_argument("--like", type=Path, required=True, help="the engine artifact it swaps into")
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--version", default="0.2.0rc1")
        e = p.parse_args(argv[1:])
        print(build_engine(e.encoder, e.decoder, e.like, e.out, e.version))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--english", type=Path, required=True, help="English text-path checkpoint")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000, 0],
                   help="Spanish training reports per run (0: all)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--val-reports", type=int, default=100)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=2, help="runs side by side (one thread each)")
    p.add_argument("--set", action="append", default=[], help="extra recipe override")
    args = p.parse_args(argv)
    args.english = args.english.resolve()
    args.out = args.out.resolve()
    cells = [(arm, n) for n in args.sizes for arm in args.arms]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(lambda c: run_cell(c[0], c[1], args), cells))
    text = table(rows)
    (args.out / "table.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
