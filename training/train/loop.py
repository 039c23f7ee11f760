"""The training loop: ``train(recipe)`` runs a recipe to a validated (and optionally exported)
engine.

One step = one optimizer update on every objective the data has: on the unpaired path a batch
of labeled images (findings, boxes) and a batch of reports with their findings prompt (report
language model); on the paired path a batch of studies (findings, boxes, contrastive, report
LM with image tokens and prompt); on the text path a batch of reports with their prompt (the
decoder alone; the parameters outside ``model.trainable`` are frozen). Per-step and per-epoch
metrics go to CSV and TensorBoard; checkpoints hold everything an exact resume needs (model,
optimizer, scheduler, grad scaler, step, best metric, RNG states; the data order is a function
of the step). With ``torchrun`` the model runs under DistributedDataParallel (NCCL on GPUs,
gloo on CPUs).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.artifact import TrainingSummary
from training.exceptions import TrainingError
from training.findings import FINDINGS_BY_KEY
from training.models.cxr_report import CXRReportModel
from training.train import objectives
from training.train.checkpoint import (
    CHECKPOINT_VERSION,
    export_checkpoint,
    load_matching,
    rng_state,
    seed_everything,
    set_rng_state,
)
from training.train.data import Reports, StepBatches, build_data, input_spec
from training.train.distributed import all_mean, init_distributed
from training.train.metrics import MetricsLog, per_finding_auroc, youden_thresholds
from training.train.objectives import Objective
from training.train.recipe import Recipe, write_effective_recipe

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    best_metric: float | None
    best_checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)
    validation: dict[str, Any] = field(default_factory=dict)
    artifact: Path | None = None


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
        spec = input_spec(probe["image_size"], probe["num_views"], recipe.input)
        self.data = build_data(recipe, spec, checkpoint["tokenizer"] if checkpoint else None)
        self.pad_id = token_id(self.data.tokenizer, PAD)
        memory = ("image", "findings") if recipe.path == "paired" else ("findings",)
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
            self.transferred = load_matching(
                model, recipe.model.init_checkpoint, self.data.tokenizer
            )
        self.thresholds: dict[str, tuple[float, float]] = {}
        #: Training boxes per locatable finding that taught the box head (export withholds
        #: regions below a minimum); None when unknown.
        self.box_counts: dict[str, int] | None = (
            self.data.train_images.box_counts if self.data.train_images is not None else None
        )
        if recipe.path == "text" and recipe.model.init_checkpoint is not None:
            # No images: the encoder's thresholds and box counts come with its weights.
            init = torch.load(recipe.model.init_checkpoint, map_location="cpu", weights_only=True)
            self.thresholds = {k: (float(v[0]), float(v[1])) for k, v in init["thresholds"].items()}
            self.box_counts = init.get("box_counts")
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
        self.trainable = select_trainable(self.model, recipe)
        self.optimizer = torch.optim.AdamW(
            [p for _, p in self.trainable], lr=o.lr, weight_decay=o.weight_decay
        )
        primary: Any = {
            "unpaired": self.data.train_images,
            "paired": self.data.train_pairs,
            "text": self.data.train_reports,
        }[recipe.path]
        assert primary is not None
        self.batches = StepBatches(
            len(primary),
            o.report_batch_size if recipe.path == "text" else o.batch_size,
            run.seed,
            rank=self.dist.rank,
            world=self.dist.world,
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
        # The artifact knows two paths: a text-path decoder serves beside an unpaired encoder.
        summary = TrainingSummary(
            path="paired" if self.recipe.path == "paired" else "unpaired",
            datasets=self.data.datasets,
            data="; ".join(self.data.datasets),
            config={
                "recipe": self.recipe.model_dump(mode="json"),
                "model": self.model_kwargs,
                "steps": self.step,
            },
            notes=f"training train {self.recipe.name} ({self.recipe.path} path)",
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
            "input_spec": self.data.spec.model_dump_json(),  # with the train-time letterbox
            "thresholds": {k: list(v) for k, v in self.thresholds.items()},
            "box_counts": self.box_counts,
            "training": self._training_summary(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "rng": rng_state(),
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
        set_rng_state(checkpoint["rng"])
        self.log.truncate("steps.csv", self.step)
        self.log.truncate("epochs.csv", self.step)
        logger.info("resumed at step %d", self.step)

    # -- one step, validation --

    def _batch(self, step: int) -> dict[str, torch.Tensor]:
        if self.recipe.path == "text":
            assert self.data.train_reports is not None
            batch = self.data.train_reports.batch(self.batches(step))
        elif self.recipe.path == "unpaired":
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
            torch.nn.utils.clip_grad_norm_([p for _, p in self.trainable], clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        values = {f"train/{k}": float(all_mean(terms[k], self.dist)) for k in sorted(terms)}
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
            if self.recipe.path != "paired"
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
            import gc

            import torch.distributed as dist

            dist.barrier()
            # DDP's reducer holds the process group. Left to the interpreter's exit, gloo's
            # threads may be torn down after their group and abort the process ("terminate
            # called without an active exception") after a complete run: release it first.
            self.objective = getattr(self.objective, "module", self.objective)
            gc.collect()
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


#: What the ``text`` path trains by default: the decoder and the findings prompt.
TEXT_PARTS: tuple[str, ...] = ("decoder.*", "finding_embed", "state_embed.*", "prompt_norm.*")


def select_trainable(model: nn.Module, recipe: Recipe) -> list[tuple[str, nn.Parameter]]:
    """The parameters that train (``model.trainable`` patterns, else every one, else on the
    ``text`` path :data:`TEXT_PARTS`); the others are frozen (``requires_grad`` off), so
    neither the optimizer nor weight decay touches them."""
    patterns = recipe.model.trainable or (TEXT_PARTS if recipe.path == "text" else ("*",))
    chosen = []
    for name, param in model.named_parameters():
        param.requires_grad_(any(fnmatch(name, pattern) for pattern in patterns))
        if param.requires_grad:
            chosen.append((name, param))
    if not chosen:
        raise TrainingError(f"model.trainable {list(patterns)} matches no parameter")
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    if frozen:
        logger.info(
            "training %d parameters (%s); %d frozen",
            sum(p.numel() for _, p in chosen),
            ", ".join(patterns),
            frozen,
        )
    return chosen


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


def train(recipe: Recipe, *, resume: Path | None = None, export: Path | None = None) -> TrainResult:
    """Run ``recipe`` (from ``resume`` when given) and return where everything went."""
    return Trainer(recipe, resume=resume).fit(export=export)
