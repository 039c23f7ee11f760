"""Training objectives; each returns a scalar and is used only where a batch has its targets.

- :func:`findings_loss`: multi-label findings, class imbalance handled by BCE positive
  weights (from the training labels' frequencies) or the asymmetric loss (Ridnik et al. 2021);
  labels the source does not give (or gives as uncertain) are masked out.
- :func:`box_loss`: L1 plus generalized IoU (torchvision) on the boxes a dataset has.
- :func:`contrastive_loss`: CLIP-style symmetric InfoNCE between image and report embeddings.
- :func:`lm_loss`: next-token cross-entropy of the report, padding ignored.

:class:`Objective` puts them together for one batch with the recipe's weights; it is the module
DistributedDataParallel wraps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn

from training.exceptions import TrainingError
from training.models.cxr_report import CXRReportModel
from training.train.recipe import BoxObjective, FindingsObjective, Recipe


def positive_weights(labels: torch.Tensor, mask: torch.Tensor, cap: float) -> torch.Tensor:
    """``negatives / positives`` per finding over the training labels, capped; 1 where a
    finding has no positive (nothing to up-weight)."""
    positives = (labels * mask).sum(dim=0)
    negatives = ((1 - labels) * mask).sum(dim=0)
    weights = torch.where(
        positives > 0, negatives / positives.clamp(min=1.0), torch.ones_like(positives)
    )
    return weights.clamp(min=1.0, max=cap)


def findings_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    config: FindingsObjective,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the labeled (image, finding) pairs."""
    logits, labels, mask = logits.float(), labels.float(), mask.float()
    if config.imbalance == "asl":
        p = torch.sigmoid(logits)
        p_neg = (p - config.asl_clip).clamp(min=0.0) if config.asl_clip > 0 else p
        loss_pos = labels * torch.log(p.clamp(min=1e-8)) * (1 - p) ** config.asl_gamma_pos
        loss_neg = (
            (1 - labels) * torch.log((1 - p_neg).clamp(min=1e-8)) * p_neg**config.asl_gamma_neg
        )
        per = -(loss_pos + loss_neg)
    else:
        weight = pos_weight if config.imbalance == "pos_weight" else None
        per = F.binary_cross_entropy_with_logits(
            logits, labels, pos_weight=weight, reduction="none"
        )
    return (per * mask).sum() / mask.sum().clamp(min=1.0)


def box_loss(
    predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, config: BoxObjective
) -> torch.Tensor:
    """``predicted``/``target`` ``[B, L, 4]`` xyxy fractions of the model grid; ``mask[B, L]``."""
    from torchvision.ops import generalized_box_iou_loss

    keep = mask.bool()
    if not keep.any():
        return predicted.sum() * 0.0
    pred, want = predicted[keep].float(), target[keep].float()
    l1 = F.l1_loss(pred, want, reduction="none").sum(dim=-1).mean()
    giou = generalized_box_iou_loss(pred, want, reduction="mean")
    return config.l1_weight * l1 + config.giou_weight * giou


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: the i-th image and i-th report are the positive pair."""
    image = F.normalize(image.float(), dim=-1)
    text = F.normalize(text.float(), dim=-1)
    logits = image @ text.t() / temperature
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def lm_loss(
    logits: torch.Tensor, targets: torch.Tensor, pad_id: int, label_smoothing: float = 0.0
) -> torch.Tensor:
    """``logits[B, T, V]`` predicting ``targets[B, T]`` (the input shifted by one)."""
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
    )


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
            terms["findings"] = findings_loss(
                logits, batch["labels"], batch["label_mask"], o.findings, self.pos_weights
            ) * self._share(batch["label_mask"].sum())
        if o.boxes.weight > 0 and self.model.config.num_locatable:
            # Always present (0 without boxes) so every DDP rank logs the same terms.
            terms["boxes"] = box_loss(
                boxes, batch["boxes"], batch["box_mask"], o.boxes
            ) * self._share(batch["box_mask"].sum())
        return terms, (memory, pooled)

    def _lm(
        self, tokens: torch.Tensor, memory: torch.Tensor | None, states: torch.Tensor | None
    ) -> torch.Tensor:
        logits = self.model.decode_teacher_forced(tokens[:, :-1], memory, states)
        targets = tokens[:, 1:]
        smoothing = self.recipe.objectives.lm.label_smoothing
        loss = lm_loss(logits, targets, self.pad_id, smoothing)
        return loss * self._share((targets != self.pad_id).sum())

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        o = self.recipe.objectives
        terms: dict[str, torch.Tensor] = {}
        weights = {
            "findings": o.findings.weight,
            "boxes": o.boxes.weight,
            "contrastive": o.contrastive.weight,
            "lm": o.lm.weight,
        }
        if self.recipe.path == "text":  # the decoder alone: no image is read
            terms["lm"] = self._lm(batch["tokens"], None, batch["states"])
        elif self.recipe.path == "unpaired":
            image_terms, _ = self._image_terms(batch)
            terms.update(image_terms)
            if o.lm.weight > 0:
                # Report-only samples: no image tokens, the decoder reads the prompt alone.
                terms["lm"] = self._lm(batch["tokens"], None, batch["states"])
        else:
            image_terms, (memory, pooled) = self._image_terms(batch)
            terms.update(image_terms)
            if o.contrastive.weight > 0 and batch["tokens"].shape[0] > 1:
                terms["contrastive"] = contrastive_loss(
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
