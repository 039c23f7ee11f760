"""The ``training`` command: evaluate predictions, label reports, list datasets, train, export.

Each subcommand is one ``_add_<name>(subparsers)`` function that declares its arguments and
sets ``func``; :data:`SUBCOMMANDS` lists them. Adding a subcommand (``export``) is one more
such function appended there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.exceptions import TrainingError

logger = logging.getLogger(__name__)

SubparsersAction = Any  # argparse._SubParsersAction is private; keep the signature readable


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from training.data import create_dataset
    from training.evaluate import (
        evaluate_predictions,
        load_predictions,
        predict_with_engine,
        protocol_for,
        scorable,
        summary_tables,
        write_config,
        write_results,
        write_study_list,
    )

    kwargs: dict[str, Any] = {}
    if args.dataset == "iu_xray" and args.layout:
        kwargs["layout"] = args.layout
    dataset = create_dataset(args.dataset, args.root, split=args.split, **kwargs)
    chosen = tuple(s.strip() for s in (args.sections or "").split(",") if s.strip())
    protocol = protocol_for(args.dataset, chosen or None, args.tokenizer)
    sections = protocol.sections
    train = None
    if args.baselines or protocol.vocabulary_threshold:  # R2Gen's vocabulary: the train split
        train = list(create_dataset(args.dataset, args.root, split="train", **kwargs))
    arguments = {k: v for k, v in vars(args).items() if k != "func"}
    config: dict[str, Any] = {"command": "training evaluate", "arguments": arguments}
    if args.engine is not None:
        # Only the studies that can be scored are predicted; the files stay beside the metrics.
        studies = write_study_list(
            scorable(list(dataset), args.lang, sections), args.out / "studies.jsonl"
        )
        args.predictions = args.out / "predictions.jsonl"
        config["predict_command"] = predict_with_engine(
            args.engine,
            studies,
            args.predictions,
            backend=args.backend,
            device=args.device,
            max_batch=args.max_batch,
            allow_test_artifact=args.allow_test_artifact,
            verbose=args.verbose,
        )
    predictions = load_predictions(args.predictions)
    result = evaluate_predictions(
        predictions.reports,
        list(dataset),
        lang=args.lang,
        sections=sections,
        tokenizer=protocol.tokenizer,
        meteor=not args.no_meteor,
        uncertain_as=args.uncertain_as,
        reference_labels=args.reference_labels,
        allow_missing=args.allow_missing,
        dataset=args.dataset,
        split=args.split,
        predictions_path=args.predictions,
        failed=predictions.errors,
        n_resamples=args.bootstrap,
        seed=args.seed,
        train_records=train,
        score_baselines=args.baselines,
    )
    json_path, md_path = write_results(result, args.out)
    write_config(args.out, config)
    print(f"{result.n_studies} studies, protocol {protocol.name}"
          + (f" ({result.bootstrap['n_resamples']} bootstrap resamples, 95% intervals)"
             if args.bootstrap else ""))
    print(summary_tables(result))
    if result.failed:
        print(f"{len(result.failed)} studies failed and are not scored (see metrics.json)")
    print(f"wrote {json_path} and {md_path}")
    return 0


def _add_evaluate(sub: SubparsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score generated reports against a dataset split",
        description="Score generated reports (a predictions JSONL file, or an engine artifact "
        "run on the split's images) against a dataset split: BLEU-1..4, METEOR, ROUGE-L, CIDEr "
        "and findings precision/recall/F1. Writes metrics.json, metrics.md and "
        "evaluate-config.json; with --engine also studies.jsonl and predictions.jsonl.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path,
                        help='JSON Lines: {"study_id": ..., "report": ...} per line')
    source.add_argument("--engine", type=Path,
                        help="engine artifact folder: report the split's images with it first "
                        "(runs python -m engine.predict)")
    p.add_argument("--dataset", required=True, help="dataset name (see `training datasets`)")
    p.add_argument("--root", type=Path, required=True, help="the dataset's folder")
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument("--lang", choices=("en", "es"), default="en")
    p.add_argument("--out", type=Path, required=True, help="folder for metrics.json/metrics.md")
    p.add_argument("--sections", default=None,
                   help="reference sections, comma separated (default: the dataset's published "
                   "protocol; IU X-Ray and MIMIC-CXR: findings, as R2Gen)")
    p.add_argument("--tokenizer", choices=("r2gen", "ptb", "none"), default=None,
                   help="text preparation (default: the protocol's, r2gen)")
    p.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                   help="also score a constant normal report and a random training report "
                   "(default: on)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples for the 95%% intervals (default: 1000; 0: none)")
    p.add_argument("--seed", type=int, default=12, help="bootstrap and baseline seed")
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")
    p.add_argument("--uncertain-as", choices=("negative", "positive"), default="negative")
    p.add_argument("--reference-labels", choices=("labeler", "dataset"), default="labeler")
    p.add_argument("--allow-missing", action="store_true",
                   help="score only the studies that have a prediction")
    p.add_argument("--layout", choices=("auto", "openi", "r2gen"), default=None,
                   help="IU X-Ray layout (default: auto)")
    engine = p.add_argument_group("with --engine")
    engine.add_argument("--backend", default="onnxruntime",
                        help="onnxruntime (default), torch or tensorrt")
    engine.add_argument("--device", default=None, help="cpu or cuda[:N] (default: the backend's)")
    engine.add_argument("--max-batch", type=int, default=8, help="studies per batch (default: 8)")
    engine.add_argument("--allow-test-artifact", action="store_true",
                        help="accept a random-weight test artifact (tests only)")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_label(args: argparse.Namespace) -> int:
    from engine.labeler import get_labeler

    labeler = get_labeler(args.lang)
    texts = [args.text] if args.text is not None else [sys.stdin.read()]
    for text in texts:
        print(json.dumps(labeler.label(text), ensure_ascii=False))
    return 0


def _add_label(sub: SubparsersAction) -> None:
    p = sub.add_parser("label", help="label one report's findings (text or stdin)")
    p.add_argument("--lang", choices=("en", "es"), default="en")
    p.add_argument("--text", default=None, help="the report; read from stdin when omitted")
    p.set_defaults(func=_cmd_label)


def _cmd_datasets(args: argparse.Namespace) -> int:
    from training.data import create_dataset, list_datasets

    if args.root is None:
        for name in list_datasets():
            print(name)
        return 0
    if args.name is None:
        raise SystemExit("--root needs --name")
    dataset = create_dataset(args.name, args.root, split=args.split)
    counts: dict[str, int] = {}
    for record in dataset:
        counts[record.split] = counts.get(record.split, 0) + 1
    print(json.dumps({"dataset": args.name, "studies": len(dataset), "splits": counts}))
    return 0


def _add_datasets(sub: SubparsersAction) -> None:
    p = sub.add_parser("datasets", help="list dataset adapters, or count one dataset's studies")
    p.add_argument("--name", default=None)
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--split", default=None)
    p.set_defaults(func=_cmd_datasets)


def _cmd_train(args: argparse.Namespace) -> int:
    from training.train.loop import train
    from training.train.recipe import load_recipe

    overrides = list(args.overrides)
    if args.init_weights is not None:
        overrides.append(f'model.init_weights="{args.init_weights}"')
    recipe = load_recipe(args.recipe, overrides)
    result = train(recipe, resume=args.resume, export=args.export)
    if result.validation:
        metrics = result.validation["metrics"]
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "/auroc/" not in k)
        print(f"{recipe.name}: {result.steps} steps; best checkpoint {result.best_checkpoint}"
              f" (validation: {shown})")
    if result.artifact is not None:
        print(f"engine artifact: {result.artifact}")
    return 0


def _add_train(sub: SubparsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train an engine from a recipe (config/training/*.toml)",
        description="Train an engine from a TOML recipe: unpaired (labeled images + reports "
        "with a findings prompt), paired (images with their reports) or text (the decoder "
        "alone on reports with their findings prompt). Writes the effective "
        "recipe, steps.csv/epochs.csv, TensorBoard logs and checkpoints under run.out_dir, "
        "ends with a validation of the best checkpoint, and with --export writes it as an "
        "engine artifact. Launch with torchrun for several GPUs (DDP).",
    )
    p.add_argument("recipe", type=Path, help="recipe TOML file")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a recipe key, e.g. optim.lr=1e-4 "
                   "(TOML value; repeatable)")
    p.add_argument("--resume", type=Path, default=None,
                   help="checkpoint to resume from (e.g. RUN/checkpoints/last.pt)")
    p.add_argument("--export", type=Path, default=None,
                   help="export the best checkpoint to this new artifact directory")
    p.add_argument("--init-weights", type=Path, default=None,
                   help="local weights file for the encoder backbone (same as "
                   "--set model.init_weights=PATH)")
    p.set_defaults(func=_cmd_train)


def _add_export(sub: SubparsersAction) -> None:
    from training.export import add_export_parser  # torch loads only when an export runs

    add_export_parser(sub)


#: Every subcommand's parser builder, in help order.
SUBCOMMANDS: list[Callable[[SubparsersAction], None]] = [
    _add_evaluate,
    _add_label,
    _add_datasets,
    _add_train,
    _add_export,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="training", description="Datasets, labeler, evaluation and export of the engine."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``training`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
