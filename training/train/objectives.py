"""Training objectives; each returns a scalar and is used only where a batch has its targets.

- :func:`findings_loss`: multi-label findings, class imbalance handled by BCE positive
  weights (from the training labels' frequencies) or the asymmetric loss (Ridnik et al. 2021);
  labels the source does not give (or gives as uncertain) are masked out.
- :func:`box_loss`: L1 plus generalized IoU (torchvision) on the boxes a dataset has.
- :func:`contrastive_loss`: CLIP-style symmetric InfoNCE between image and report embeddings.
- :func:`lm_loss`: next-token cross-entropy of the report, padding ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention

from training.train.recipe import BoxObjective, FindingsObjective


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
