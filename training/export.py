"""Export a trained report model to the engine artifact (:mod:`engine.artifact`).

Writes ``encoder.onnx`` and ``decoder_step.onnx`` (explicit key/value cache in and out), the
same graphs as ``torch.export`` programs (``*.pt2``) for the PyTorch backend, the tokenizer,
the findings prompt table (``finding_prompt.npz``) when the decoder attends to the findings,
and the manifest with every file's SHA-256. ONNX Runtime is checked against PyTorch on fresh random
input and the largest difference is recorded in the manifest; export fails above the tolerance.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from engine.artifact import (
    DECODER_GRAPH,
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_FEATURES,
    ENCODER_GRAPH,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    FORMAT_VERSION,
    DecoderSpec,
    DecodingDefaults,
    EngineArtifact,
    EngineManifest,
    ExportInfo,
    FindingSpec,
    GraphSpec,
    InputSpec,
    PromptSpec,
    TokenizerSpec,
    TrainingSummary,
    utc_now,
    write_manifest,
)
from training.exceptions import TrainingError

if TYPE_CHECKING:
    # torch loads only when an export runs, so the ``training`` CLI stays quick to start.
    import torch
    from tokenizers import Tokenizer

    from training.models.cxr_report import CXRReportModel

logger = logging.getLogger(__name__)

ONNX_OPSET = 18
#: What ``encoder.onnx`` outputs: the four every artifact has, then the pooled features the
#: runtime's image gate measures (engine.gate; calibrated by scripts/calibrate_image_gate.py).
EXPORTED_ENCODER_OUTPUTS = (*ENCODER_OUTPUTS, ENCODER_FEATURES)
#: ONNX Runtime and PyTorch on CPU, float32: kernels differ in summation order only.
DEFAULT_TOLERANCE = 1e-4


class FindingLike(Protocol):
    """What export reads of a finding (``training.findings.Finding`` fits)."""

    @property
    def key(self) -> str: ...
    @property
    def name_en(self) -> str: ...
    @property
    def name_es(self) -> str: ...
    @property
    def code_value(self) -> str: ...
    @property
    def code_scheme(self) -> str: ...
    @property
    def locatable(self) -> bool: ...


def finding_specs(
    findings: Sequence[FindingLike],
    thresholds: Mapping[str, tuple[float, float]] | None = None,
    box_counts: Mapping[str, int] | None = None,
    min_region_boxes: int = 0,
) -> tuple[FindingSpec, ...]:
    """The manifest's finding set, in model output order; thresholds are (present, absent).

    With ``box_counts`` (training boxes per locatable finding), a locatable finding with fewer
    than ``min_region_boxes`` reports no region or side (``report_region = False``).
    """
    specs = []
    for finding in findings:
        report_region = True
        if finding.locatable and box_counts is not None:
            count = int(box_counts.get(finding.key, 0))
            report_region = count >= min_region_boxes
            if not report_region:
                logger.warning(
                    "%s: %d training boxes (< %d): the engine reports no region or side for it",
                    finding.key,
                    count,
                    min_region_boxes,
                )
        present, absent = (thresholds or {}).get(finding.key, (0.5, 0.2))
        specs.append(
            FindingSpec(
                key=finding.key,
                code_value=finding.code_value,
                code_scheme=finding.code_scheme,
                name_es=finding.name_es,
                name_en=finding.name_en,
                locatable=finding.locatable,
                report_region=report_region,
                code_verified=bool(getattr(finding, "code_verified", True)),
                local_code=str(getattr(finding, "local_code", "")),
                threshold_present=present,
                threshold_absent=absent,
            )
        )
    return tuple(specs)


def _export_graph(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    dynamic_shapes: dict[str, dict[int, Any]],
    input_names: Sequence[str],
    output_names: Sequence[str],
    torch_path: Path,
    onnx_path: Path,
) -> None:
    import torch

    program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes)
    torch.export.save(program, torch_path)
    onnx_program = torch.onnx.export(
        program,
        args,
        input_names=list(input_names),
        output_names=list(output_names),
        opset_version=ONNX_OPSET,
        dynamo=True,
        verbose=False,
    )
    if onnx_program is None:
        raise TrainingError(f"torch.onnx.export returned nothing for {onnx_path.name}")
    onnx_program.save(str(onnx_path), external_data=False)
    import onnx

    onnx.checker.check_model(str(onnx_path), full_check=True)


def _max_diffs(
    session_path: Path,
    feeds: dict[str, np.ndarray],
    expected: Sequence[torch.Tensor],
    names: Sequence[str],
) -> dict[str, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(session_path), providers=["CPUExecutionProvider"])
    outputs = session.run(list(names), feeds)
    diffs = {}
    for name, got, want in zip(names, outputs, expected, strict=True):
        if got.shape != tuple(want.shape):
            raise TrainingError(
                f"{session_path.name}: output {name} has shape {got.shape}, PyTorch gives "
                f"{tuple(want.shape)}; the export is wrong"
            )
        diffs[name] = float(np.max(np.abs(got - want.numpy()))) if got.size else 0.0
    return diffs


def decoding_within(decoding: DecodingDefaults | None, max_positions: int) -> DecodingDefaults:
    """The manifest's decoding defaults, with ``max_length`` within the decoder's positions:
    BOS takes the first, so at most ``max_positions - 1`` tokens follow (the runtime would
    otherwise clamp, and warn, on every engine run). None: that longest length."""
    limit = max_positions - 1
    if decoding is None:
        return DecodingDefaults(max_length=limit)
    if decoding.max_length <= limit:
        return decoding
    logger.warning(
        "decoding max_length %d exceeds the decoder's %d positions; exported as %d",
        decoding.max_length,
        max_positions,
        limit,
    )
    return decoding.model_copy(
        update={"max_length": limit, "min_length": min(decoding.min_length, limit)}
    )


def export_artifact(
    model: CXRReportModel,
    tokenizer: Tokenizer,
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    findings: Sequence[FindingLike],
    input_spec: InputSpec | None = None,
    thresholds: Mapping[str, tuple[float, float]] | None = None,
    box_counts: Mapping[str, int] | None = None,
    min_region_boxes: int = 50,
    decoding: DecodingDefaults | None = None,
    training: TrainingSummary | None = None,
    purpose: str = "production",
    description: str = "",
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
    languages: Sequence[str] = ("es",),
) -> EngineArtifact:
    """Write ``model`` and ``tokenizer`` as an engine artifact directory ``out_dir``."""
    import torch

    from training.models.cxr_report import DecoderStepGraph, EncoderGraph
    from training.models.tokenizer import BOS, EOS, PAD, SECTION_TOKENS, UNK, token_id

    config = model.config
    if len(findings) != config.num_findings:
        raise TrainingError(
            f"model scores {config.num_findings} findings but {len(findings)} were given; pass "
            "the finding set the model was trained on"
        )
    locatable = sum(1 for f in findings if f.locatable)
    if locatable != config.num_locatable:
        raise TrainingError(
            f"model has {config.num_locatable} box outputs but the finding set marks {locatable} "
            "findings locatable"
        )
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise TrainingError(
            f"tokenizer has {tokenizer.get_vocab_size()} tokens, the model only {config.vocab_size}"
        )
    spec = input_spec or InputSpec(
        height=config.image_size,
        width=config.image_size,
        views=("frontal", "lateral") if config.num_views == 2 else ("frontal",),
    )
    if (spec.height, spec.width, len(spec.views)) != (
        config.image_size,
        config.image_size,
        config.num_views,
    ):
        raise TrainingError(
            f"input spec {spec.height}x{spec.width} with {len(spec.views)} views does not match "
            f"the model ({config.image_size}x{config.image_size}, {config.num_views} views)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise TrainingError(f"{out} is not empty; export into a new directory")

    model = model.eval().cpu()
    generator = torch.Generator().manual_seed(seed)
    dec = model.decoder
    images = torch.randn(2, config.num_views, spec.height, spec.width, generator=generator)
    encoder_graph, step_graph = EncoderGraph(model), DecoderStepGraph(model)
    with torch.no_grad():
        memory, probs, _ = model.encode(images)
        states = (probs >= 0.5).long() * 2  # any states: the graph does not depend on them
        cross_keys, cross_values = model.decoder_cross(
            memory, states if model.uses_prompt else None
        )
    tokens = torch.randint(0, config.vocab_size, (2, 1), generator=generator)
    past = torch.randn(2, dec.num_layers, dec.num_heads, 3, dec.head_dim, generator=generator)
    batch = torch.export.Dim("batch", min=1, max=1024)
    past_len = torch.export.Dim("past", min=0, max=config.max_positions - 1)

    with torch.no_grad():
        _export_graph(
            encoder_graph,
            (images,),
            {"images": {0: batch}},
            ENCODER_INPUTS,
            EXPORTED_ENCODER_OUTPUTS,
            out / "encoder.pt2",
            out / "encoder.onnx",
        )
        cache_shape = {0: batch, 3: past_len}
        _export_graph(
            step_graph,
            (tokens, cross_keys, cross_values, past, past.clone()),
            {
                "tokens": {0: batch},
                "cross_keys": {0: batch},
                "cross_values": {0: batch},
                "past_keys": cache_shape,
                "past_values": cache_shape,
            },
            DECODER_INPUTS,
            DECODER_OUTPUTS,
            out / "decoder_step.pt2",
            out / "decoder_step.onnx",
        )

        # Agreement on input the export never saw: a batch size and cache length of their own.
        check_images = torch.randn(
            3, config.num_views, spec.height, spec.width, generator=generator
        )
        encoder_out = encoder_graph(check_images)
        check_memory, check_probs, _ = model.encode(check_images)
        check_states = torch.randint(0, 3, check_probs.shape, generator=generator)
        check_cross = model.decoder_cross(
            check_memory, check_states if model.uses_prompt else None
        )
        diffs = {
            f"encoder.{k}": v
            for k, v in _max_diffs(
                out / "encoder.onnx",
                {"images": check_images.numpy()},
                encoder_out,
                EXPORTED_ENCODER_OUTPUTS,
            ).items()
        }
        check_tokens = torch.randint(0, config.vocab_size, (3, 1), generator=generator)
        check_past = torch.randn(
            3, dec.num_layers, dec.num_heads, 5, dec.head_dim, generator=generator
        )
        step_out = step_graph(
            check_tokens, check_cross[0], check_cross[1], check_past, check_past * 0.5
        )
        feeds = {
            "tokens": check_tokens.numpy(),
            "cross_keys": check_cross[0].numpy(),
            "cross_values": check_cross[1].numpy(),
            "past_keys": check_past.numpy(),
            "past_values": (check_past * 0.5).numpy(),
        }
        diffs.update(
            {
                f"decoder_step.{k}": v
                for k, v in _max_diffs(
                    out / "decoder_step.onnx", feeds, step_out, DECODER_OUTPUTS
                ).items()
            }
        )
    worst = max(diffs.values())
    if not np.isfinite(worst) or worst > tolerance:
        raise TrainingError(
            f"ONNX Runtime differs from PyTorch by {worst:.3g} (> {tolerance:.1g}): {diffs}; "
            "the exported graphs are not faithful, do not ship them"
        )
    logger.info("export check: max |ONNX Runtime - PyTorch| = %.3g", worst)

    tokenizer.save(str(out / "tokenizer.json"))
    prompt = None
    if model.uses_prompt:
        with torch.no_grad():
            table_keys, table_values = model.prompt_table()
        np.savez(out / "finding_prompt.npz", keys=table_keys.numpy(), values=table_values.numpy())
        prompt = PromptSpec(file="finding_prompt.npz")
    specs = finding_specs(findings, thresholds, box_counts, min_region_boxes)
    manifest = EngineManifest(
        format_version=FORMAT_VERSION,
        name=name,
        version=version,
        created=utc_now(),
        description=description,
        purpose=purpose,  # type: ignore[arg-type]  # validated by pydantic
        model_family="cxr_report",
        training=training or TrainingSummary(config=config.to_dict()),
        input=spec,
        findings=specs,
        languages=tuple(languages),
        tokenizer=TokenizerSpec(
            file="tokenizer.json",
            bos_id=token_id(tokenizer, BOS),
            eos_id=token_id(tokenizer, EOS),
            pad_id=token_id(tokenizer, PAD),
            unk_id=token_id(tokenizer, UNK),
            section_tokens={
                title: token_id(tokenizer, tok)  # type: ignore[misc]
                for title, tok in SECTION_TOKENS.items()
            },
        ),
        decoder=DecoderSpec(
            num_layers=dec.num_layers,
            num_heads=dec.num_heads,
            head_dim=dec.head_dim,
            vocab_size=config.vocab_size,
            memory_tokens=int(cross_keys.shape[3]),
            max_positions=config.max_positions,
            memory=config.decoder_memory,  # type: ignore[arg-type]  # validated by pydantic
        ),
        prompt=prompt,
        graphs={
            ENCODER_GRAPH: GraphSpec(
                onnx="encoder.onnx",
                torch="encoder.pt2",
                inputs=ENCODER_INPUTS,
                outputs=EXPORTED_ENCODER_OUTPUTS,
            ),
            DECODER_GRAPH: GraphSpec(
                onnx="decoder_step.onnx",
                torch="decoder_step.pt2",
                inputs=DECODER_INPUTS,
                outputs=DECODER_OUTPUTS,
            ),
        },
        decoding=decoding_within(decoding, config.max_positions),
        export=ExportInfo(
            torch_version=torch.__version__,
            onnx_opset=ONNX_OPSET,
            max_abs_diff=diffs,
            tolerance=tolerance,
        ),
    )
    artifact = write_manifest(out, manifest)
    logger.info("engine artifact written to %s", out)
    return artifact


def _declare(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("checkpoint", type=Path, help="training checkpoint (torch.save dict)")
    parser.add_argument("out", type=Path, help="new artifact directory")
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument(
        "--purpose", default="production", choices=("production", "evaluation", "test")
    )
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument(
        "--min-region-boxes",
        type=int,
        default=50,
        help="a locatable finding with fewer training boxes (recorded in the checkpoint) "
        "reports no region or side (default 50)",
    )
    parser.set_defaults(func=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m training.export``."""
    return _declare(argparse.ArgumentParser(prog="training export", description=__doc__))


def add_export_parser(sub: Any) -> None:
    """Declare the ``export`` subcommand on the ``training`` CLI's subparsers."""
    _declare(sub.add_parser("export", help="export a checkpoint to an engine artifact"))


def run(args: argparse.Namespace) -> int:
    """Export a checkpoint holding ``model_name``, ``model_config``, ``state_dict``,
    ``tokenizer`` (JSON text), ``finding_keys`` and optional ``thresholds``/``training``/
    ``input_spec`` (JSON text, with the train-time letterbox the run used)."""
    import torch
    from tokenizers import Tokenizer

    from training.findings import get_finding
    from training.models.cxr_report import CXRReportModel
    from training.models.registry import create_model
    from training.train.checkpoint import checkpoint_input_spec

    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    try:
        config = dict(checkpoint["model_config"])
        model = create_model(checkpoint["model_name"], **config)
        model.load_state_dict(checkpoint["state_dict"])
        findings = [get_finding(key) for key in checkpoint["finding_keys"]]
        tokenizer = Tokenizer.from_str(checkpoint["tokenizer"])
    except KeyError as exc:
        raise TrainingError(
            f"{args.checkpoint}: checkpoint lacks {exc}; save it with the "
            "training loop's checkpoint writer"
        ) from exc
    if not isinstance(model, CXRReportModel):
        raise TrainingError(f"{checkpoint['model_name']} is not a report model")
    thresholds = {
        k: (float(v[0]), float(v[1])) for k, v in dict(checkpoint.get("thresholds", {})).items()
    }
    training = TrainingSummary.model_validate(json.loads(checkpoint.get("training", "{}")))
    # The report language the run trained on (``training train`` records its recipe).
    language = training.config.get("recipe", {}).get("text", {}).get("language", "es")
    export_artifact(
        model,
        tokenizer,
        args.out,
        name=args.name,
        version=args.version,
        findings=findings,
        thresholds=thresholds,
        box_counts=checkpoint.get("box_counts"),
        min_region_boxes=args.min_region_boxes,
        training=training,
        input_spec=checkpoint_input_spec(checkpoint),
        purpose=args.purpose,
        tolerance=args.tolerance,
        languages=(language,),
    )
    print(args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["add_export_parser", "build_parser", "export_artifact", "finding_specs", "main", "run"]
