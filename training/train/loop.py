"""The training loop: ``train(recipe)`` runs a recipe to a validated (and optionally exported)
engine.

One step = one optimizer update on every objective the data has: on the unpaired path a batch
of labeled images (findings, boxes) and a batch of reports with their findings prompt (report
language model); on the paired path a batch of studies (findings, boxes, contrastive, report
LM with image tokens and prompt). Per-step and per-epoch metrics go to CSV and TensorBoard;
checkpoints hold everything an exact resume needs (model, optimizer, scheduler, grad scaler,
step, best metric, RNG states; the data order is a function of the step). With ``torchrun``
the model runs under DistributedDataParallel (NCCL on GPUs, gloo on CPUs).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import shutil
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.artifact import InputSpec, TrainingSummary
from training.data import create_dataset
from training.data.records import StudyRecord
from training.exceptions import TrainingError
from training.findings import FINDINGS_BY_KEY
from training.models.cxr_report import CXRReportModel
from training.train import objectives
from training.train.data import (
    LabeledImages,
    PairedStudies,
    Reports,
    StepBatches,
    has_image,
    limit,
    model_finding_keys,
    report_findings,
    report_target,
)
from training.train.metrics import per_finding_auroc, youden_thresholds
from training.train.recipe import Recipe, write_effective_recipe

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


# -- data --------------------------------------------------------------------------------------


@dataclass
class RunData:
    keys: tuple[str, ...]
    spec: InputSpec
    tokenizer: Any
    datasets: tuple[str, ...]
    train_images: LabeledImages | None = None
    val_images: LabeledImages | None = None
    train_reports: Reports | None = None
    val_reports: Reports | None = None
    train_pairs: PairedStudies | None = None
    val_pairs: PairedStudies | None = None
    pos_weight: torch.Tensor | None = None


def _records(name: str, root: Path, split: str, **kwargs: Any) -> list[StudyRecord]:
    return list(create_dataset(name, root, split=split, **kwargs))


def _texts(records: list[StudyRecord], recipe: Recipe) -> tuple[list[StudyRecord], list[str]]:
    kept, texts = [], []
    for record in records:
        text = report_target(record, recipe)
        if text:
            kept.append(record)
            texts.append(text)
    if len(kept) < len(records):
        logger.info(
            "%d of %d reports have no %s target text; left out",
            len(records) - len(kept),
            len(records),
            recipe.text.language,
        )
    return kept, texts


def input_spec(recipe: Recipe, image_size: int, num_views: int) -> InputSpec:
    return InputSpec(
        height=image_size,
        width=image_size,
        views=("frontal", "lateral") if num_views == 2 else ("frontal",),
    )


def build_data(recipe: Recipe, spec: InputSpec, tokenizer_json: str | None) -> RunData:
    """Read the recipe's datasets and build the training and validation sets."""
    from tokenizers import Tokenizer

    from training.models.tokenizer import train_report_tokenizer

    d = recipe.data
    assert d.iu_root is not None  # the recipe validator requires it
    iu_kwargs = {"layout": d.iu_layout}
    datasets: list[str] = []
    if recipe.path == "unpaired":
        assert d.nih_root is not None
        nih_train = limit(_records("nih", d.nih_root, "train"), d.max_train_images)
        nih_val = limit(_records("nih", d.nih_root, "val"), d.max_val_images)
        keys = model_finding_keys(recipe, [dict(r.findings) for r in nih_train])
        iu_train, train_texts = _texts(
            limit(_records("iu_xray", d.iu_root, "train", **iu_kwargs), d.max_train_reports),
            recipe,
        )
        iu_val, val_texts = _texts(
            limit(_records("iu_xray", d.iu_root, "val", **iu_kwargs), d.max_val_reports), recipe
        )
        datasets = [
            f"nih:train ({len(nih_train)} images)",
            f"iu_xray:train ({len(iu_train)} reports, {recipe.text.language})",
        ]
    else:
        all_train = [
            r for r in _records("iu_xray", d.iu_root, "train", **iu_kwargs) if has_image(r)
        ]
        all_val = [r for r in _records("iu_xray", d.iu_root, "val", **iu_kwargs) if has_image(r)]
        iu_train, train_texts = _texts(limit(all_train, d.max_train_images), recipe)
        iu_val, val_texts = _texts(limit(all_val, d.max_val_images), recipe)
        if not iu_train:
            raise TrainingError(
                f"{d.iu_root}: no training study has both an image on disk and a report; the "
                "paired path needs the images (R2Gen layout: images/<id>/<n>.png)"
            )
        keys = model_finding_keys(
            recipe, [dict(r.findings) or report_findings(r, recipe) for r in iu_train]
        )
        datasets = [f"iu_xray:train ({len(iu_train)} studies with images, {recipe.text.language})"]
    if not train_texts:
        raise TrainingError("no training report has target text; check data.iu_root")
    tokenizer = (
        Tokenizer.from_str(tokenizer_json)
        if tokenizer_json
        else train_report_tokenizer(train_texts, vocab_size=recipe.text.vocab_size)
    )
    seed = recipe.run.seed
    train_reports = Reports(iu_train, recipe, keys, tokenizer, train_texts)
    val_reports = Reports(iu_val, recipe, keys, tokenizer, val_texts) if iu_val else None
    data = RunData(keys, spec, tokenizer, tuple(datasets))
    if recipe.path == "unpaired":
        data.train_images = LabeledImages(nih_train, keys, spec, recipe.augment, seed)
        data.val_images = LabeledImages(nih_val, keys, spec, None, seed) if nih_val else None
        data.train_reports, data.val_reports = train_reports, val_reports
        labels, mask = (
            torch.from_numpy(data.train_images.labels),
            torch.from_numpy(data.train_images.mask),
        )
    else:
        train_img = LabeledImages(iu_train, keys, spec, recipe.augment, seed)
        data.train_pairs = PairedStudies(train_img, train_reports)
        if iu_val and val_reports is not None:
            data.val_pairs = PairedStudies(
                LabeledImages(iu_val, keys, spec, None, seed), val_reports
            )
        labels = torch.where(
            torch.from_numpy(train_img.mask) > 0,
            torch.from_numpy(train_img.labels),
            train_reports.labels,
        )
        mask = torch.maximum(torch.from_numpy(train_img.mask), train_reports.label_mask)
    data.pos_weight = objectives.positive_weights(
        labels, mask, recipe.objectives.findings.max_pos_weight
    )
    return data


# -- the objective module (what DDP wraps) ------------------------------------------------------


class Objective(nn.Module):
    """The model plus the recipe's objectives: ``forward(batch) -> {name: loss}``, with
    ``"loss"`` the weighted sum. DDP synchronizes gradients through this forward."""

    def __init__(
        self, model: CXRReportModel, recipe: Recipe, pad_id: int, pos_weight: torch.Tensor | None
    ) -> None:
        super().__init__()
        self.model = model
        self.recipe = recipe
        self.pad_id = pad_id
        self.register_buffer(
            "pos_weight",
            pos_weight if pos_weight is not None else torch.ones(model.config.num_findings),
            persistent=False,
        )

    @property
    def pos_weights(self) -> torch.Tensor:
        weights = self.pos_weight
        assert isinstance(weights, torch.Tensor)
        return weights

    @staticmethod
    def _share(count: torch.Tensor) -> torch.Tensor:
        """``local / mean over ranks`` of a loss's element count: a per-rank mean times it is
        the mean over the whole global batch, so DDP's gradient average equals one process's
        gradient on that batch (a rank without boxes does not halve the box gradient)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return torch.ones((), device=count.device)
        total = count.detach().float().clone()
        dist.all_reduce(total)
        return count.float() * dist.get_world_size() / total.clamp(min=1.0)

    def _image_terms(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
        o = self.recipe.objectives
        memory, logits, boxes, pooled = self.model.finding_logits(batch["images"])
        terms = {}
        if o.findings.weight > 0:
            terms["findings"] = objectives.findings_loss(
                logits, batch["labels"], batch["label_mask"], o.findings, self.pos_weights
            ) * self._share(batch["label_mask"].sum())
        if o.boxes.weight > 0 and self.model.config.num_locatable:
            # Always present (0 without boxes) so every DDP rank logs the same terms.
            terms["boxes"] = objectives.box_loss(
                boxes, batch["boxes"], batch["box_mask"], o.boxes
            ) * self._share(batch["box_mask"].sum())
        return terms, (memory, pooled)

    def _lm(
        self, tokens: torch.Tensor, memory: torch.Tensor | None, states: torch.Tensor | None
    ) -> torch.Tensor:
        logits = self.model.decode_teacher_forced(tokens[:, :-1], memory, states)
        targets = tokens[:, 1:]
        return objectives.lm_loss(
            logits, targets, self.pad_id, self.recipe.objectives.lm.label_smoothing
        ) * self._share((targets != self.pad_id).sum())

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        o = self.recipe.objectives
        terms: dict[str, torch.Tensor] = {}
        weights = {
            "findings": o.findings.weight,
            "boxes": o.boxes.weight,
            "contrastive": o.contrastive.weight,
            "lm": o.lm.weight,
        }
        if self.recipe.path == "unpaired":
            image_terms, _ = self._image_terms(batch)
            terms.update(image_terms)
            if o.lm.weight > 0:
                # Report-only samples: no image tokens, the decoder reads the prompt alone.
                terms["lm"] = self._lm(batch["tokens"], None, batch["states"])
        else:
            image_terms, (memory, pooled) = self._image_terms(batch)
            terms.update(image_terms)
            if o.contrastive.weight > 0 and batch["tokens"].shape[0] > 1:
                terms["contrastive"] = objectives.contrastive_loss(
                    self.model.image_proj(pooled),
                    self.model.text_embedding(batch["tokens"], self.pad_id),
                    o.contrastive.temperature,
                )
            if o.lm.weight > 0:
                terms["lm"] = self._lm(batch["tokens"], memory, batch["states"])
        if not terms:
            raise TrainingError("every objective has weight 0; nothing to train")
        total = sum(weights[name] * value for name, value in terms.items())
        assert isinstance(total, torch.Tensor)
        terms["loss"] = total
        return terms


# -- distributed ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device) -> Dist:
    """Join the ``torchrun`` process group when launched by it (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _all_mean(value: torch.Tensor, d: Dist) -> torch.Tensor:
    if not d.enabled:
        return value.detach()
    import torch.distributed as dist

    out = value.detach().clone()
    dist.all_reduce(out)
    return out / d.world


# -- outputs ---------------------------------------------------------------------------------------


class MetricsLog:
    """Per-step and per-epoch metrics: ``steps.csv``, ``epochs.csv`` and TensorBoard."""

    def __init__(self, out_dir: Path, tensorboard: bool, enabled: bool) -> None:
        self.out_dir, self.enabled = out_dir, enabled
        self.writer: Any = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def _append(self, name: str, row: dict[str, Any]) -> None:
        path = self.out_dir / name
        row = {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()}
        header: list[str] = []
        if path.exists():
            with path.open(newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), [])
        if header and set(row) <= set(header):
            with path.open("a", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, header).writerow(row)
            return
        # A new column (an objective that appeared): rewrite with the wider header.
        rows = []
        if path.exists():
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        rows.append(row)
        columns = list(dict.fromkeys([*header, *row]))
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(rows)

    def truncate(self, name: str, after_step: int) -> None:
        """Drop rows past ``after_step`` (a resumed run rewrites them)."""
        path = self.out_dir / name
        if not self.enabled or not path.exists():
            return
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= after_step]
            columns = list(dict.fromkeys(c for r in rows for c in r)) or ["step"]
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(rows)

    def log(self, name: str, step: int, values: dict[str, float], **extra: Any) -> None:
        if not self.enabled:
            return
        self._append(name, {"step": step, **extra, **values})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    best_metric: float | None
    best_checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)
    validation: dict[str, Any] = field(default_factory=dict)
    artifact: Path | None = None


# -- the trainer -----------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: dict[str, Any]) -> None:
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


def pick_device(name: str, d_local: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{d_local}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Runs one recipe; ``fit()`` trains (resuming when asked), validates and returns."""

    def __init__(self, recipe: Recipe, *, resume: Path | None = None) -> None:
        self.recipe = recipe
        run = recipe.run
        if run.threads:
            torch.set_num_threads(run.threads)
        self.device = pick_device(run.device, int(os.environ.get("LOCAL_RANK", "0")))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.dist = init_distributed(self.device)
        self.out_dir = Path(run.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        checkpoint = None
        if resume is not None:
            checkpoint = torch.load(resume, map_location="cpu", weights_only=True)
            if checkpoint.get("checkpoint_version") != CHECKPOINT_VERSION:
                raise TrainingError(f"{resume}: not a resumable checkpoint of this trainer")
        seed_everything(run.seed)

        from training.models.registry import create_model
        from training.models.tokenizer import PAD, token_id

        probe = create_model_config(recipe)
        spec = input_spec(recipe, probe["image_size"], probe["num_views"])
        self.data = build_data(recipe, spec, checkpoint["tokenizer"] if checkpoint else None)
        self.pad_id = token_id(self.data.tokenizer, PAD)
        memory = ("findings",) if recipe.path == "unpaired" else ("image", "findings")
        self.model_kwargs: dict[str, Any] = {
            **recipe.model.options,
            "num_findings": len(self.data.keys),
            "num_locatable": sum(1 for k in self.data.keys if FINDINGS_BY_KEY[k].locatable),
            "vocab_size": self.data.tokenizer.get_vocab_size(),
            "encoder": recipe.model.encoder,
            "decoder_memory": memory,
        }
        self.transferred: list[str] = []
        seed_everything(run.seed)  # the same initial weights whatever the data did
        model = create_model(recipe.model.name, **self.model_kwargs)
        if not isinstance(model, CXRReportModel):
            raise TrainingError(f"{recipe.model.name} is not a report model")
        if recipe.model.init_weights is not None and checkpoint is None:
            from training.models.encoder import load_init_weights

            load_init_weights(model.encoder, recipe.model.init_weights)
        if recipe.model.init_checkpoint is not None and checkpoint is None:
            self.transferred = load_matching(model, recipe.model.init_checkpoint)
        if recipe.text.max_tokens > model.config.max_positions:
            raise TrainingError(
                f"text.max_tokens {recipe.text.max_tokens} exceeds the model's "
                f"{model.config.max_positions} positions; lower it or raise max_positions"
            )
        self.model = model.to(self.device)
        self.objective: nn.Module = Objective(
            self.model, recipe, self.pad_id, self.data.pos_weight
        ).to(self.device)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.objective = DistributedDataParallel(
                self.objective,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,  # e.g. the image keys/values on the unpaired path
            )
        o = recipe.optim
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay
        )
        primary = self.data.train_images if recipe.path == "unpaired" else self.data.train_pairs
        assert primary is not None
        self.batches = StepBatches(
            len(primary), o.batch_size, run.seed, rank=self.dist.rank, world=self.dist.world
        )
        self.report_batches = None
        if recipe.path == "unpaired" and self.data.train_reports is not None:
            self.report_batches = StepBatches(
                len(self.data.train_reports),
                min(
                    o.report_batch_size,
                    len(self.data.train_reports) // self.dist.world * self.dist.world,
                ),
                run.seed + 1,
                rank=self.dist.rank,
                world=self.dist.world,
            )
        self.schedule_steps = o.epochs * self.batches.per_epoch
        self.total_steps = (
            min(self.schedule_steps, o.max_steps) if o.max_steps else self.schedule_steps
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        amp = run.amp and self.device.type == "cuda"
        self.amp_dtype = (
            torch.bfloat16
            if amp and torch.cuda.is_bf16_supported()
            else torch.float16
            if amp
            else None
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.best: float | None = None
        self.bad_epochs = 0
        self.validations = 0  # end-of-epoch rounds of this process (the same on every rank)
        self.history: list[dict[str, float]] = []
        self.thresholds: dict[str, tuple[float, float]] = {}
        self.log = MetricsLog(self.out_dir, run.tensorboard, self.dist.main)
        if self.dist.main:
            write_effective_recipe(recipe, self.out_dir)
        if checkpoint is not None:
            self._restore(checkpoint)
            assert resume is not None
            best = resume.parent / "best.pt"
            if self.dist.main and best.is_file() and not (self.ckpt_dir / "best.pt").exists():
                # Resuming into a new folder: the best checkpoint so far comes along.
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(best, self.ckpt_dir / "best.pt")

    # -- schedule and checkpoints --

    def _lr_factor(self, step: int) -> float:
        warmup = self.recipe.optim.warmup_steps
        if warmup and step < warmup:
            return (step + 1) / warmup
        span = max(1, self.schedule_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / span)))

    def _training_summary(self) -> str:
        summary = TrainingSummary(
            path=self.recipe.path,
            datasets=self.data.datasets,
            data="; ".join(self.data.datasets),
            config={
                "recipe": self.recipe.model_dump(mode="json"),
                "model": self.model_kwargs,
                "steps": self.step,
            },
            notes=f"training train {self.recipe.name}",
        )
        return summary.model_dump_json()

    def checkpoint_dict(self) -> dict[str, Any]:
        """Everything export needs (model, tokenizer, findings, thresholds, training) and
        everything an exact resume needs."""
        return {
            "checkpoint_version": CHECKPOINT_VERSION,
            "model_name": self.recipe.model.name,
            "model_config": self.model.config.to_dict(),
            "state_dict": self.model.state_dict(),
            "tokenizer": self.data.tokenizer.to_str(),
            "finding_keys": list(self.data.keys),
            "thresholds": {k: list(v) for k, v in self.thresholds.items()},
            "training": self._training_summary(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "rng": _rng_state(),
            "recipe": self.recipe.model_dump(mode="json"),
        }

    def save(self, name: str) -> Path:
        path = self.ckpt_dir / name
        if self.dist.main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(self.checkpoint_dict(), tmp)
            os.replace(tmp, path)  # a crash never leaves a half-written checkpoint
        return path

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.step = int(checkpoint["step"])
        self.best = checkpoint["best"]
        self.bad_epochs = int(checkpoint["bad_epochs"])
        self.history = list(checkpoint["history"])
        self.thresholds = {
            k: (float(v[0]), float(v[1])) for k, v in checkpoint["thresholds"].items()
        }
        _set_rng_state(checkpoint["rng"])
        self.log.truncate("steps.csv", self.step)
        self.log.truncate("epochs.csv", self.step)
        logger.info("resumed at step %d", self.step)

    # -- one step, validation --

    def _batch(self, step: int) -> dict[str, torch.Tensor]:
        if self.recipe.path == "unpaired":
            assert self.data.train_images is not None
            batch = self.data.train_images.batch(self.batches(step))
            if self.report_batches is not None and self.data.train_reports is not None:
                batch.update(self.data.train_reports.batch(self.report_batches(step)))
        else:
            assert self.data.train_pairs is not None
            batch = self.data.train_pairs.batch(self.batches(step))
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def train_step(self) -> dict[str, float]:
        self.objective.train()
        batch = self._batch(self.step)
        with self._autocast():
            terms = self.objective(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["loss"]).backward()
        clip = self.recipe.optim.grad_clip
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        values = {f"train/{k}": float(_all_mean(terms[k], self.dist)) for k in sorted(terms)}
        values["train/lr"] = float(self.scheduler.get_last_lr()[0])
        return values

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Findings AUROC on the validation images and report LM loss on the validation
        reports; also sets the decision thresholds (Youden's J on the validation split)."""
        self.model.eval()
        metrics: dict[str, float] = {}
        images = (
            self.data.val_images
            if self.recipe.path == "unpaired"
            else (self.data.val_pairs.images if self.data.val_pairs is not None else None)
        )
        if images is not None and len(images):
            probs, labels, masks = [], [], []
            for start in range(0, len(images), 32):
                rows = [(i, 0) for i in range(start, min(start + 32, len(images)))]
                batch = images.batch(rows)
                with self._autocast():
                    _, logits, _, _ = self.model.finding_logits(batch["images"].to(self.device))
                probs.append(torch.sigmoid(logits.float()).cpu().numpy())
                labels.append(batch["labels"].numpy())
                masks.append(batch["label_mask"].numpy())
            p, y, m = np.concatenate(probs), np.concatenate(labels), np.concatenate(masks)
            if self.data.val_pairs is not None:
                paired = self.data.val_pairs.reports
                y = np.where(m > 0, y, paired.labels.numpy())
                m = np.maximum(m, paired.label_mask.numpy())
            per = per_finding_auroc(p, y, m, self.data.keys)
            for key, value in per.items():
                metrics[f"val/auroc/{key}"] = value
            if per:
                metrics["val/findings_auroc"] = float(np.mean(list(per.values())))
            self.thresholds = youden_thresholds(p, y, m, self.data.keys)
        reports: Reports | None = (
            self.data.val_reports
            if self.recipe.path == "unpaired"
            else (self.data.val_pairs.reports if self.data.val_pairs is not None else None)
        )
        if reports is not None and len(reports):
            total, count = 0.0, 0
            for start in range(0, len(reports), 32):
                rows = [(i, 0) for i in range(start, min(start + 32, len(reports)))]
                batch = {k: v.to(self.device) for k, v in reports.batch(rows).items()}
                memory = None
                if self.recipe.path == "paired":
                    assert self.data.val_pairs is not None
                    imgs = self.data.val_pairs.images.batch(rows)["images"].to(self.device)
                    memory = self.model.finding_logits(imgs)[0]
                tokens = batch["tokens"]
                with self._autocast():
                    logits = self.model.decode_teacher_forced(
                        tokens[:, :-1], memory, batch["states"]
                    )
                targets = tokens[:, 1:]
                n = int((targets != self.pad_id).sum())
                total += float(objectives.lm_loss(logits, targets, self.pad_id)) * n
                count += n
            metrics["val/lm_loss"] = total / max(count, 1)
        return metrics

    def _improved(self, metrics: dict[str, float]) -> bool:
        stop = self.recipe.run.early_stopping
        value = metrics.get(stop.metric)
        if value is None:
            raise TrainingError(
                f"run.early_stopping.metric {stop.metric!r} is not measured; measured: "
                f"{sorted(metrics)}"
            )
        if self.best is None or (value > self.best if stop.mode == "max" else value < self.best):
            self.best = value
            return True
        return False

    def _broadcast_stop(self, stop: bool) -> bool:
        if not self.dist.enabled:
            return stop
        import torch.distributed as dist

        flag = torch.tensor([1 if stop else 0], device=self.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    # -- the run --

    def _end_of_epoch(self, epoch: int) -> bool:
        """Validate, keep the best checkpoint, decide early stopping (rank 0 decides)."""
        self.validations += 1
        stop = False
        if self.dist.main:
            metrics = self.validate()
            improved = self._improved(metrics)
            self.bad_epochs = 0 if improved else self.bad_epochs + 1
            self.history.append({"epoch": float(epoch), "step": float(self.step), **metrics})
            self.log.log("epochs.csv", self.step, metrics, epoch=epoch)
            logger.info(
                "epoch %d step %d: %s",
                epoch,
                self.step,
                ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "/auroc/" not in k),
            )
            if improved:
                self.save("best.pt")
            stop = self.bad_epochs >= self.recipe.run.early_stopping.patience
            if stop:
                logger.info(
                    "early stopping: %s did not improve for %d epochs",
                    self.recipe.run.early_stopping.metric,
                    self.bad_epochs,
                )
        return self._broadcast_stop(stop)

    def fit(self, *, export: Path | None = None) -> TrainResult:
        from tqdm import tqdm

        run = self.recipe.run
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=self.recipe.name,
            disable=not (run.progress and self.dist.main),
            unit="step",
        )
        stopped = False
        try:
            while self.step < self.total_steps and not stopped:
                values = self.train_step()
                epoch = self.batches.epoch_of(self.step - 1)
                if self.step % run.log_every == 0 or self.step == 1:
                    self.log.log("steps.csv", self.step, values, epoch=epoch)
                bar.update(1)
                bar.set_postfix(loss=f"{values['train/loss']:.4f}")
                epoch_done = self.step % self.batches.per_epoch == 0
                if epoch_done or (run.validate_every and self.step % run.validate_every == 0):
                    stopped = self._end_of_epoch(epoch)
                if run.checkpoint_every and self.step % run.checkpoint_every == 0:
                    self.save(f"step-{self.step:07d}.pt")
                    self.save("last.pt")
                elif epoch_done:
                    self.save("last.pt")
        finally:
            bar.close()
        if not self.validations:  # a run shorter than an epoch still ends validated
            self._end_of_epoch(self.batches.epoch_of(max(self.step - 1, 0)))
        self.save("last.pt")
        result = TrainResult(
            self.out_dir, self.step, self.best, self.ckpt_dir / "best.pt", list(self.history)
        )
        if self.dist.main:
            result.validation = self.final_validation()
            if export is not None:
                result.artifact = export_checkpoint(result.best_checkpoint, export, self.recipe)
        self.log.close()
        if self.dist.enabled:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
        return result

    def final_validation(self) -> dict[str, Any]:
        """The best checkpoint on the validation split; written to ``validation.json``."""
        path = self.ckpt_dir / "best.pt"
        if not path.exists():
            logger.warning("no best checkpoint in %s; validating the last one", self.ckpt_dir)
            path = self.ckpt_dir / "last.pt"
        best = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(best["state_dict"])
        metrics = self.validate()
        report = {
            "checkpoint": str(path),
            "step": best["step"],
            "metrics": metrics,
            "thresholds": self.thresholds,
        }
        (self.out_dir / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
        return report


def load_matching(model: nn.Module, path: Path) -> list[str]:
    """Load every tensor of a training checkpoint whose name and shape match ``model``'s;
    returns the names loaded."""
    if not Path(path).is_file():
        raise TrainingError(f"{path}: model.init_checkpoint not found")
    source = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    own = model.state_dict()
    matching = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise TrainingError(f"{path}: no tensor matches this model; is it a report model?")
    model.load_state_dict(matching, strict=False)
    logger.info("init checkpoint %s: %d of %d tensors loaded (%d kept fresh)", path,
                len(matching), len(own), len(own) - len(matching))
    return sorted(matching)


def create_model_config(recipe: Recipe) -> dict[str, Any]:
    """Image size and views of the recipe's model (the input spec depends on them)."""
    from training.models.registry import create_model

    probe = create_model(
        recipe.model.name,
        num_findings=1,
        num_locatable=0,
        vocab_size=32,
        **{
            k: v
            for k, v in recipe.model.options.items()
            if k in ("image_size", "num_views", "channels")
        },
    )
    assert isinstance(probe, CXRReportModel)
    return {"image_size": probe.config.image_size, "num_views": probe.config.num_views}


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
        training=TrainingSummary.model_validate_json(state["training"]),
        purpose=recipe.export.purpose,
        description=f"{recipe.path} recipe {recipe.name}",
        tolerance=recipe.export.tolerance,
        languages=(recipe.text.language,),
    )
    return out


def train(recipe: Recipe, *, resume: Path | None = None, export: Path | None = None) -> TrainResult:
    """Run ``recipe`` (from ``resume`` when given) and return where everything went."""
    return Trainer(recipe, resume=resume).fit(export=export)
