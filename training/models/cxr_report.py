"""The chest radiograph report model: image encoder, finding head, box head, text decoder.

``create_model("cxr_tiny", num_findings=..., num_locatable=..., vocab_size=...)``; ``encoder``
picks the image encoder by name (:mod:`training.models.encoder`). ``decoder_memory`` says what
the decoder attends to: the image tokens, the *findings prompt* (one token per finding, its
embedding plus the embedding of its state absent/uncertain/present, as PromptMRG's diagnosis
prompts), or both. The unpaired recipe trains a findings-only decoder on reports; at inference
the predicted findings form the prompt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from engine.artifact import PROMPT_STATES
from training.models.decoder import TextDecoder
from training.models.encoder import create_encoder
from training.models.registry import register_model

#: What the decoder may attend to, in memory order.
MEMORY_KINDS: tuple[str, ...] = ("image", "findings")


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
    encoder: str = "cnn"
    decoder_memory: tuple[str, ...] = ("image",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder_memory", tuple(self.decoder_memory))
        object.__setattr__(self, "channels", tuple(self.channels))
        if not self.decoder_memory or not set(self.decoder_memory) <= set(MEMORY_KINDS):
            raise ValueError(
                f"CXRModelConfig.decoder_memory must be a non-empty subset of {MEMORY_KINDS}, "
                f"got {self.decoder_memory}"
            )
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
        self.encoder = create_encoder(
            config.encoder,
            image_size=config.image_size,
            d_model=config.d_model,
            channels=config.channels,
        )
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
        # CLIP-style heads for image-report alignment on paired data (training only).
        self.image_proj = nn.Linear(config.d_model, config.d_model)
        self.text_proj = nn.Linear(config.d_model, config.d_model)
        if "findings" in config.decoder_memory:
            # Finding and state at the same scale: with the finding at 0.02 beside the state's
            # N(0, 1), every finding's "present" token was the same after the norm (cosine
            # 0.9995 in the first engine) and the decoder could not tell which was present.
            self.finding_embed = nn.Parameter(torch.zeros(config.num_findings, config.d_model))
            nn.init.normal_(self.finding_embed, std=1.0)
            self.state_embed = nn.Embedding(len(PROMPT_STATES), config.d_model)
            self.prompt_norm = nn.LayerNorm(config.d_model)

    @property
    def uses_image_memory(self) -> bool:
        return "image" in self.config.decoder_memory

    @property
    def uses_prompt(self) -> bool:
        return "findings" in self.config.decoder_memory

    def prompt_memory(self, states: torch.Tensor) -> torch.Tensor:
        """``states[B, F]`` (indices into :data:`PROMPT_STATES`) -> prompt tokens ``[B, F, D]``.

        Each token depends on its own finding and state only, so the artifact stores the keys
        and values of every (finding, state) pair as a table instead of a graph.
        """
        if not self.uses_prompt:
            raise ValueError("this model's decoder does not attend to a findings prompt")
        return self.prompt_norm(self.finding_embed.unsqueeze(0) + self.state_embed(states))

    def decoder_cross(
        self, memory: torch.Tensor | None, states: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values the decoder attends to: image tokens, then prompt tokens, as
        ``decoder_memory`` says. Report-only samples (no image) need a prompt-only decoder."""
        parts = []
        if self.uses_image_memory:
            if memory is None:
                raise ValueError("the decoder attends to image tokens; pass images")
            parts.append(memory)
        if self.uses_prompt:
            if states is None:
                raise ValueError("the decoder attends to the findings prompt; pass states")
            parts.append(self.prompt_memory(states))
        return self.decoder.cross_cache(torch.cat(parts, dim=1))

    def prompt_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of every prompt token: ``[states, layers, heads, F, head_dim]``."""
        f = self.config.num_findings
        rows = [torch.full((1, f), i, dtype=torch.long) for i in range(len(PROMPT_STATES))]
        pairs = [self.decoder.cross_cache(self.prompt_memory(r.to(self.finding_embed.device)))
                 for r in rows]
        return torch.cat([k for k, _ in pairs]), torch.cat([v for _, v in pairs])

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images -> image memory, finding probabilities, boxes (what the artifact serves)."""
        memory, logits, boxes, _ = self.finding_logits(images)
        return memory, torch.sigmoid(logits), boxes

    def finding_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Training pass of the encoder: memory, finding logits, boxes, pooled embedding."""
        b, v, h, w = images.shape
        tokens = self.encoder(images.reshape(b * v, 1, h, w))
        tokens = tokens.reshape(b, v, -1, tokens.shape[-1]) + self.view_embed.unsqueeze(0)
        memory = self.norm(tokens.reshape(b, -1, tokens.shape[-1]))
        pooled = memory.mean(dim=1)
        frontal = memory[:, : tokens.shape[2]].mean(dim=1)
        raw = torch.sigmoid(self.box_head(frontal)).reshape(b, -1, 4)
        centre, size = raw[..., :2], raw[..., 2:] * 0.9 + 0.05
        boxes = torch.cat([(centre - size / 2).clamp(0, 1), (centre + size / 2).clamp(0, 1)], -1)
        return memory, self.finding_head(pooled), boxes[:, : self.config.num_locatable], pooled

    def text_embedding(self, tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
        """Mean of the report's token embeddings (padding left out), projected: the text side
        of the contrastive objective."""
        keep = (tokens != pad_id).unsqueeze(-1).to(self.decoder.embed.weight.dtype)
        summed = (self.decoder.embed(tokens) * keep).sum(dim=1)
        return self.text_proj(summed / keep.sum(dim=1).clamp(min=1.0))

    def decode_teacher_forced(
        self, tokens: torch.Tensor, memory: torch.Tensor | None, states: torch.Tensor | None
    ) -> torch.Tensor:
        """Logits ``[B, T, V]`` of every position of ``tokens`` (training)."""
        cross_keys, cross_values = self.decoder_cross(memory, states)
        empty = self.decoder.empty_cache(tokens.shape[0], tokens.device)
        logits, _, _ = self.decoder(tokens, cross_keys, cross_values, empty, empty)
        return logits

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor, states: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced pass: probabilities, boxes, logits ``[B, T, V]``."""
        memory, probs, boxes = self.encode(images)
        return probs, boxes, self.decode_teacher_forced(tokens, memory, states)


class EncoderGraph(nn.Module):
    """What ``encoder.onnx`` holds: ``images -> (probs, boxes, cross_keys, cross_values,
    features)``; ``features`` is the pooled embedding the finding head reads, which the
    runtime's image gate measures against the training distribution (engine.gate)."""

    def __init__(self, model: CXRReportModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        memory, logits, boxes, pooled = self.model.finding_logits(images)
        cross_keys, cross_values = self.model.decoder.cross_cache(memory)
        return torch.sigmoid(logits), boxes, cross_keys, cross_values, pooled


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
