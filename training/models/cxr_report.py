"""The chest radiograph report model: CNN encoder, finding head, box head, text decoder.

``create_model("cxr_tiny", num_findings=..., num_locatable=..., vocab_size=...)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from training.models.decoder import TextDecoder
from training.models.encoder import ConvEncoder
from training.models.registry import register_model


@dataclass(frozen=True)
class CXRModelConfig:
    num_findings: int
    num_locatable: int
    vocab_size: int
    image_size: int = 224
    num_views: int = 1
    channels: tuple[int, ...] = (32, 64, 128, 256, 256)
    d_model: int = 256
    num_layers: int = 3
    num_heads: int = 8
    ffn_dim: int = 1024
    max_positions: int = 128
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for name in ("num_findings", "vocab_size", "image_size", "num_views", "d_model"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"CXRModelConfig.{name} must be positive")
        if not 0 <= self.num_locatable <= self.num_findings:
            raise ValueError("CXRModelConfig.num_locatable must be in [0, num_findings]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CXRReportModel(nn.Module):
    """Images ``[B, V, H, W]`` -> memory tokens, finding probabilities, boxes, report logits.

    Boxes are ``(x_min, y_min, x_max, y_max)`` as fractions of the model grid of the frontal
    view, one per locatable finding; built from a centre and size so ``min < max`` always.
    """

    def __init__(self, config: CXRModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ConvEncoder(config.image_size, config.channels, config.d_model)
        self.view_embed = nn.Parameter(torch.zeros(config.num_views, 1, config.d_model))
        self.norm = nn.LayerNorm(config.d_model)
        self.finding_head = nn.Linear(config.d_model, config.num_findings)
        self.box_head = nn.Linear(config.d_model, max(config.num_locatable, 1) * 4)
        self.decoder = TextDecoder(
            config.vocab_size,
            config.d_model,
            config.num_layers,
            config.num_heads,
            config.ffn_dim,
            config.max_positions,
            config.dropout,
        )

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, v, h, w = images.shape
        tokens = self.encoder(images.reshape(b * v, 1, h, w))
        tokens = tokens.reshape(b, v, -1, tokens.shape[-1]) + self.view_embed.unsqueeze(0)
        memory = self.norm(tokens.reshape(b, -1, tokens.shape[-1]))
        pooled = memory.mean(dim=1)
        probs = torch.sigmoid(self.finding_head(pooled))
        frontal = memory[:, : tokens.shape[2]].mean(dim=1)
        raw = torch.sigmoid(self.box_head(frontal)).reshape(b, -1, 4)
        centre, size = raw[..., :2], raw[..., 2:] * 0.9 + 0.05
        boxes = torch.cat([(centre - size / 2).clamp(0, 1), (centre + size / 2).clamp(0, 1)], -1)
        return memory, probs, boxes[:, : self.config.num_locatable]

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced pass for training: probabilities, boxes, logits ``[B, T, V]``."""
        memory, probs, boxes = self.encode(images)
        empty = self.decoder.empty_cache(images.shape[0], images.device)
        logits, _, _ = self.decoder(tokens, *self.decoder.cross_cache(memory), empty, empty)
        return probs, boxes, logits


class EncoderGraph(nn.Module):
    """What ``encoder.onnx`` holds: ``images -> (probs, boxes, cross_keys, cross_values)``."""

    def __init__(self, model: CXRReportModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        memory, probs, boxes = self.model.encode(images)
        cross_keys, cross_values = self.model.decoder.cross_cache(memory)
        return probs, boxes, cross_keys, cross_values


class DecoderStepGraph(nn.Module):
    """What ``decoder_step.onnx`` holds: one step, logits of the last token and the cache."""

    def __init__(self, model: CXRReportModel) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(
        self,
        tokens: torch.Tensor,
        cross_keys: torch.Tensor,
        cross_values: torch.Tensor,
        past_keys: torch.Tensor,
        past_values: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, keys, values = self.decoder(
            tokens, cross_keys, cross_values, past_keys, past_values
        )
        return logits[:, -1], keys, values


def _build(defaults: dict[str, Any], kwargs: dict[str, Any]) -> CXRReportModel:
    merged = {**defaults, **kwargs}
    if "channels" in merged:
        merged["channels"] = tuple(merged["channels"])
    return CXRReportModel(CXRModelConfig(**merged))


@register_model
def cxr_tiny(**kwargs: Any) -> CXRReportModel:
    """For tests: 64x64 input, two decoder layers of width 32. Seconds to export."""
    defaults = dict(
        image_size=64,
        channels=(8, 16, 32, 32),
        d_model=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=64,
        max_positions=64,
        dropout=0.0,
    )
    return _build(defaults, kwargs)


@register_model
def cxr_small(**kwargs: Any) -> CXRReportModel:
    """CPU-friendly: 224x224, 7x7 tokens per view, three decoder layers of width 256."""
    return _build({}, kwargs)


@register_model
def cxr_base(**kwargs: Any) -> CXRReportModel:
    """GPU training: 384x384, wider encoder, six decoder layers of width 512."""
    defaults = dict(
        image_size=384,
        channels=(48, 96, 192, 384, 512, 512),
        d_model=512,
        num_layers=6,
        num_heads=8,
        ffn_dim=2048,
        max_positions=160,
    )
    return _build(defaults, kwargs)
