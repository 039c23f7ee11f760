"""Checkpoints: RNG states for an exact resume, seeding, loading a trained checkpoint's
matching tensors (transfer), and exporting a checkpoint to an engine artifact."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.artifact import InputSpec, TrainingSummary
from training.exceptions import TrainingError
from training.models.cxr_report import CXRReportModel
from training.train.recipe import Recipe

logger = logging.getLogger(__name__)

#: Bumped when the checkpoint layout changes; ``--resume`` refuses other versions.
CHECKPOINT_VERSION = 1


def rng_state() -> dict[str, Any]:
    # Tensors and plain values only, so checkpoints load with ``weights_only=True``.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            name,
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: Tensors with one row per token of the tokenizer (the output projection is tied to them).
TOKEN_ROWS: tuple[str, ...] = ("decoder.embed.weight", "decoder.lm_head.weight")


def token_rows(
    source: torch.Tensor, fresh: torch.Tensor, old_vocab: dict[str, int], new_vocab: dict[str, int]
) -> torch.Tensor:
    """``fresh`` with the rows of the tokens both vocabularies share (same string) taken
    from ``source``: special and section tokens, punctuation, digits, shared sub-words."""
    out = fresh.clone()
    for token, new_id in new_vocab.items():
        old_id = old_vocab.get(token)
        if old_id is not None and old_id < source.shape[0] and new_id < out.shape[0]:
            out[new_id] = source[old_id]
    return out


def load_matching(model: nn.Module, path: Path, tokenizer: Any | None = None) -> list[str]:
    """Load every tensor of a training checkpoint whose name and shape match ``model``'s;
    returns the names loaded.

    Token embeddings are indexed by the checkpoint's own tokenizer: when ``tokenizer`` (this
    run's) differs from it (English to Spanish), only the rows of the tokens both share are
    transferred (:func:`token_rows`), whatever the shapes; the other rows keep their fresh
    initialisation."""
    if not Path(path).is_file():
        raise TrainingError(f"{path}: model.init_checkpoint not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    source = dict(state["state_dict"])
    own = model.state_dict()
    if tokenizer is not None and state.get("tokenizer"):
        from tokenizers import Tokenizer

        old_vocab = Tokenizer.from_str(state["tokenizer"]).get_vocab()
        new_vocab = tokenizer.get_vocab()
        if old_vocab != new_vocab:
            shared = len(old_vocab.keys() & new_vocab.keys())
            logger.info(
                "init checkpoint %s has another tokenizer: %d of %d token rows transferred",
                path,
                shared,
                len(new_vocab),
            )
            for name in TOKEN_ROWS:
                if name in source and name in own:
                    source[name] = token_rows(source[name], own[name], old_vocab, new_vocab)
    matching = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise TrainingError(f"{path}: no tensor matches this model; is it a report model?")
    model.load_state_dict(matching, strict=False)
    logger.info(
        "init checkpoint %s: %d of %d tensors loaded (%d kept fresh)",
        path,
        len(matching),
        len(own),
        len(own) - len(matching),
    )
    return sorted(matching)


def checkpoint_input_spec(state: dict[str, Any]) -> InputSpec | None:
    """The input spec a run trained with (its train-time letterbox included), for the
    manifest; None for checkpoints written before it was recorded (export then derives it
    from the model)."""
    raw = state.get("input_spec")
    return InputSpec.model_validate_json(raw) if raw else None


def export_checkpoint(checkpoint: Path, out: Path, recipe: Recipe) -> Path:
    """Export a trained checkpoint with the recipe's export settings (parity checked)."""
    from tokenizers import Tokenizer

    from training.export import export_artifact
    from training.findings import get_finding
    from training.models.registry import create_model

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = create_model(state["model_name"], **state["model_config"])
    assert isinstance(model, CXRReportModel)
    model.load_state_dict(state["state_dict"])
    thresholds = {k: (float(v[0]), float(v[1])) for k, v in state["thresholds"].items()}
    export_artifact(
        model,
        Tokenizer.from_str(state["tokenizer"]),
        out,
        name=recipe.export.name,
        version=recipe.export.version,
        findings=[get_finding(k) for k in state["finding_keys"]],
        thresholds=thresholds,
        box_counts=state.get("box_counts"),
        min_region_boxes=recipe.export.min_region_boxes,
        training=TrainingSummary.model_validate_json(state["training"]),
        input_spec=checkpoint_input_spec(state),
        purpose=recipe.export.purpose,
        description=f"{recipe.path} recipe {recipe.name}",
        tolerance=recipe.export.tolerance,
        languages=(recipe.text.language,),
    )
    return out


#: The parameters a text-path decoder brings to an engine: the decoder and the findings prompt.
DECODER_PARTS: tuple[str, ...] = ("decoder.", "finding_embed", "state_embed.", "prompt_norm.")


def with_decoder(encoder_checkpoint: Path, decoder_checkpoint: Path) -> tuple[CXRReportModel, Any]:
    """An engine's model from two training checkpoints: the encoder and heads of one, the
    decoder, findings prompt and tokenizer of the other (a text-path run). Both must be
    findings-prompt models on the same finding set, in the same order."""
    from tokenizers import Tokenizer

    from training.models.registry import create_model

    image = torch.load(encoder_checkpoint, map_location="cpu", weights_only=True)
    text = torch.load(decoder_checkpoint, map_location="cpu", weights_only=True)
    if list(image["finding_keys"]) != list(text["finding_keys"]):
        raise TrainingError(
            f"{decoder_checkpoint}: finding set {text['finding_keys']} differs from the "
            f"encoder's {image['finding_keys']}; train the decoder with data.findings = "
            "the engine's finding set, in the project's order"
        )
    config = dict(image["model_config"])
    decoder_keys = ("vocab_size", "d_model", "num_layers", "num_heads", "ffn_dim",
                    "max_positions", "decoder_memory")
    mismatched = [k for k in decoder_keys[1:] if config[k] != text["model_config"][k]]
    if mismatched or "image" in config["decoder_memory"]:
        raise TrainingError(f"{decoder_checkpoint}: decoder shape differs ({mismatched})")
    config["vocab_size"] = text["model_config"]["vocab_size"]
    model = create_model(image["model_name"], **config)
    assert isinstance(model, CXRReportModel)
    state = {k: v for k, v in image["state_dict"].items() if not k.startswith(DECODER_PARTS)}
    state.update({k: v for k, v in text["state_dict"].items() if k.startswith(DECODER_PARTS)})
    model.load_state_dict(state)
    return model, Tokenizer.from_str(text["tokenizer"])
