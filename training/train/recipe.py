"""Training recipes: TOML files in ``config/training/``, validated in one place.

``load_recipe(path, overrides=["optim.lr=3e-4", ...])`` reads the file, applies each
``key=value`` override (the value parsed as a TOML value, else taken as a string), validates
the result against :class:`Recipe` and returns it. :func:`write_effective_recipe` writes the
recipe that actually ran beside the run's outputs (``recipe.toml`` and ``recipe.json``).
"""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from training.exceptions import TrainingError

logger = logging.getLogger(__name__)


class RecipeError(TrainingError, ValueError):
    """A recipe file or override is invalid; the message names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    #: A registered report model (``cxr_tiny``, ``cxr_small``, ``cxr_base``).
    name: str = "cxr_small"
    #: Image encoder: ``cnn``, ``densenet121``, ``resnet50``, ``vit_small``.
    encoder: str = "cnn"
    #: Local weights file for the encoder backbone (nothing is ever downloaded).
    init_weights: Path | None = None
    #: A ``training train`` checkpoint to start from (English-to-Spanish transfer): every
    #: tensor whose name and shape match is loaded; the rest (e.g. the embeddings of another
    #: tokenizer) keep their fresh initialisation.
    init_checkpoint: Path | None = None
    #: Extra model settings (``image_size``, ``d_model``, ``dropout``...).
    options: dict[str, Any] = Field(default_factory=dict)
    #: Parameters that train, as name patterns (``fnmatch``, e.g. ``"decoder.embed.*"``,
    #: ``"decoder.layers.*.cross_attn.*"``); the others are frozen. Empty: every parameter
    #: the path uses (the ``text`` path trains the decoder and the findings prompt only).
    trainable: tuple[str, ...] = ()


class DataSection(_Section):
    #: Labeled images (unpaired path: encoder and heads).
    nih_root: Path | None = None
    #: Reports (unpaired: decoder; paired: with their images when ``images`` is present).
    iu_root: Path | None = None
    #: IU X-Ray layout: ``auto``, ``openi`` or ``r2gen``.
    iu_layout: str = "auto"
    #: Keep at most this many training studies of each source (0: all), e.g. for smoke runs.
    max_train_images: int = Field(default=0, ge=0)
    max_train_reports: int = Field(default=0, ge=0)
    max_val_images: int = Field(default=0, ge=0)
    max_val_reports: int = Field(default=0, ge=0)
    #: Finding keys the model scores; empty: every finding the image labels speak of (the
    #: ``text`` path has no image labels and needs the list).
    findings: tuple[str, ...] = ()
    #: Each training report whose prompt has a present finding (of the model's finding set,
    #: other than "no finding") is seen this many times per epoch (unpaired and text paths):
    #: IU X-Ray is mostly normal reports.
    oversample_findings: int = Field(default=1, ge=1)
    #: Longest side of the decoded training images kept in memory (0: twice the model input's
    #: side); each step letterboxes and augments from this cache. Smaller images keep their
    #: size, and no side goes below the engine's smallest analysed side.
    image_cache_side: int = Field(default=0, ge=0)


class TextSection(_Section):
    #: Language of the report the decoder learns to write.
    language: Literal["en", "es"] = "en"
    #: Report sections the decoder learns to write; each is kept apart in the target (its own
    #: section token), so the engine writes "Hallazgos" and "Impresión" separately.
    sections: tuple[Literal["findings", "impression"], ...] = ("findings", "impression")
    #: Where the findings prompt of a training report comes from: the rule-based labeler on the
    #: report text, the dataset's own labels (IU X-Ray: manual MeSH annotations), or the
    #: labeler of the target language on the target text itself (``target``: the prompt says
    #: what the target says, e.g. when the bridge dropped the sentence naming a finding).
    prompt_labels: Literal["labeler", "dataset", "target"] = "labeler"
    #: Training only: each prompt token's state is replaced by a random state with this
    #: probability (label noise, so the decoder cannot trust one token blindly).
    prompt_noise: float = Field(default=0.0, ge=0.0, lt=1.0)
    vocab_size: int = Field(default=2000, gt=16)
    max_tokens: int = Field(default=96, gt=4)


class FindingsObjective(_Section):
    weight: float = Field(default=1.0, ge=0.0)
    #: Class imbalance: BCE with positive weights from the training labels, or asymmetric loss.
    imbalance: Literal["pos_weight", "asl", "none"] = "pos_weight"
    max_pos_weight: float = Field(default=20.0, gt=0.0)
    asl_gamma_neg: float = Field(default=4.0, ge=0.0)
    asl_gamma_pos: float = Field(default=0.0, ge=0.0)
    asl_clip: float = Field(default=0.05, ge=0.0, lt=1.0)


class BoxObjective(_Section):
    weight: float = Field(default=1.0, ge=0.0)
    l1_weight: float = Field(default=1.0, ge=0.0)
    giou_weight: float = Field(default=1.0, ge=0.0)


class ContrastiveObjective(_Section):
    weight: float = Field(default=0.5, ge=0.0)
    temperature: float = Field(default=0.07, gt=0.0)


class LMObjective(_Section):
    weight: float = Field(default=1.0, ge=0.0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)


class Objectives(_Section):
    """Each objective runs only where the batch has its targets (boxes, paired reports)."""

    findings: FindingsObjective = Field(default_factory=FindingsObjective)
    boxes: BoxObjective = Field(default_factory=BoxObjective)
    contrastive: ContrastiveObjective = Field(default_factory=ContrastiveObjective)
    lm: LMObjective = Field(default_factory=LMObjective)


class InputSection(_Section):
    """Train-time letterbox, written into the manifest's input spec (``engine.artifact.InputSpec``).

    Served radiographs are rarely square (a portrait CR gets bars left and right) while NIH
    images are: ``"random-aspect"`` places a share ``train_letterbox_p`` of training images at
    an aspect ratio (width/height) drawn from ``train_aspect_range`` before the engine's
    letterbox, so the model has seen the bars it will be served. Validation never does.
    """

    train_letterbox: Literal["none", "random-aspect"] = "random-aspect"
    train_letterbox_p: float = Field(default=0.5, ge=0.0, le=1.0)
    train_aspect_range: tuple[float, float] = (0.8, 1.0)

    @model_validator(mode="after")
    def _range(self) -> InputSection:
        low, high = self.train_aspect_range
        if not 0 < low <= high:
            raise ValueError("input.train_aspect_range must be (low, high), 0 < low <= high")
        return self


class AugmentSection(_Section):
    """Radiograph augmentation; never a horizontal flip (laterality is clinical information).

    Intensities (contrast, brightness, gamma) change the [0, 1] display image and geometry
    (rotation, scale, translation) moves it and its boxes, both before the engine's letterbox
    (``training.train.augment``).
    """

    enabled: bool = True
    rotate_degrees: float = Field(default=7.0, ge=0.0, le=30.0)
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = Field(default=0.05, ge=0.0, le=0.3)
    contrast: float = Field(default=0.15, ge=0.0, le=1.0)
    brightness: float = Field(default=0.1, ge=0.0, le=1.0)
    gamma: tuple[float, float] = (0.8, 1.25)

    @model_validator(mode="after")
    def _ranges(self) -> AugmentSection:
        for name in ("scale", "gamma"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"augment.{name} must be (low, high) with 0 < low <= high")
        return self


class OptimSection(_Section):
    lr: float = Field(default=3e-4, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    batch_size: int = Field(default=16, ge=1)
    report_batch_size: int = Field(default=32, ge=1)
    epochs: int = Field(default=10, ge=1)
    #: Stop after this many optimizer steps in all (0: run the epochs).
    max_steps: int = Field(default=0, ge=0)
    warmup_steps: int = Field(default=100, ge=0)
    grad_clip: float = Field(default=1.0, ge=0.0)


class EarlyStopping(_Section):
    metric: str = "val/findings_auroc"
    mode: Literal["max", "min"] = "max"
    patience: int = Field(default=3, ge=1)


class RunSection(_Section):
    out_dir: Path = Path("runs/train")
    seed: int = 0
    #: Save a resumable checkpoint every this many steps (0: at epoch ends only).
    checkpoint_every: int = Field(default=0, ge=0)
    log_every: int = Field(default=10, ge=1)
    #: Validate every this many steps as well as at each epoch end (0: epoch ends only).
    validate_every: int = Field(default=0, ge=0)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    #: Mixed precision on GPU (bf16 where supported, else fp16 with a grad scaler).
    amp: bool = True
    device: str = "auto"
    tensorboard: bool = True
    progress: bool = True
    #: Threads for CPU training (0: PyTorch's default).
    threads: int = Field(default=0, ge=0)


class ExportSection(_Section):
    name: str = "cxr-engine"
    version: str = "0.1.0"
    purpose: Literal["production", "evaluation", "test"] = "evaluation"
    tolerance: float = Field(default=1e-4, gt=0.0)
    #: A locatable finding whose box head saw fewer training boxes than this reports no region
    #: or side (``report_region = false`` in the manifest): its box would be a guess.
    min_region_boxes: int = Field(default=50, ge=0)


class Recipe(_Section):
    """One training run: which path, which data, which model, which objectives."""

    name: str = Field(min_length=1)
    #: ``unpaired``: encoder + heads on labeled images, decoder on reports with the findings
    #: prompt. ``paired``: images with their reports, end to end. ``text``: the decoder alone
    #: on reports with their findings prompt (no images read; encoder and heads untouched).
    path: Literal["unpaired", "paired", "text"]
    description: str = ""
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    text: TextSection = Field(default_factory=TextSection)
    objectives: Objectives = Field(default_factory=Objectives)
    input: InputSection = Field(default_factory=InputSection)
    augment: AugmentSection = Field(default_factory=AugmentSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    run: RunSection = Field(default_factory=RunSection)
    export: ExportSection = Field(default_factory=ExportSection)

    @model_validator(mode="after")
    def _data_for_path(self) -> Recipe:
        if self.path == "unpaired" and self.data.nih_root is None:
            raise ValueError("the unpaired path needs data.nih_root (labeled images)")
        if self.path == "text" and not self.data.findings:
            raise ValueError(
                "the text path needs data.findings (the prompt's finding set, e.g. the "
                "engine's)"
            )
        if self.data.iu_root is None:
            raise ValueError(f"the {self.path} path needs data.iu_root (reports)")
        return self


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=3e-4"`` -> (``["optim", "lr"]``, ``0.0003``); values are TOML values, and a
    value TOML cannot read (``runs/x``) is a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {text!r} must look like section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return [part.strip() for part in key.split(".")], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


def recipe_from_dict(data: dict[str, Any], *, source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise RecipeError(f"{source}: invalid recipe: {problems}") from exc


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe; relative data paths resolve from the current
    directory (the repository root, where ``../shared/data`` lies)."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{file}: recipe not found; recipes live in config/training/") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{file}: not valid TOML ({exc})") from exc
    return recipe_from_dict(apply_overrides(data, list(overrides or [])), source=str(file))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value), ensure_ascii=False)


def recipe_to_toml(recipe: Recipe) -> str:
    data = recipe.model_dump(mode="json", exclude_none=True)
    lines: list[str] = []

    def emit(table: dict[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict) or k == "options"}
        tables = {k: v for k, v in table.items() if k not in scalars}
        if prefix and scalars:
            lines.append(f"\n[{prefix}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {_toml_value(value)}")
        for key, value in tables.items():
            emit(value, f"{prefix}.{key}" if prefix else key)

    emit(data, "")
    return "\n".join(lines).lstrip() + "\n"


def write_effective_recipe(recipe: Recipe, out_dir: Path) -> Path:
    """Write the recipe as run (``recipe.toml``, and ``recipe.json`` for tools)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "recipe.json").write_text(
        json.dumps(recipe.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    path = out_dir / "recipe.toml"
    path.write_text(recipe_to_toml(recipe), encoding="utf-8")
    return path
