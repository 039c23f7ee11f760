"""Image encoders: ``[N, 1, H, W]`` -> ``[N, tokens, d_model]``, created by name.

``create_encoder(name, image_size=..., d_model=...)``: ``cnn`` is the project's small residual
CNN; ``densenet121`` (CheXNet's backbone), ``resnet50`` and ``vit_small`` are timm models built
with ``in_chans=1`` and ``pretrained=False``: nothing is ever downloaded. A user with pretrained
weights passes them as a local file (:func:`load_init_weights`, ``--init-weights PATH``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut; the first may downsample."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act(y + self.shortcut(x))


class ConvEncoder(nn.Module):
    """``[N, 1, H, W]`` -> ``[N, (H/s)*(W/s), d_model]`` with learned 2-D position embeddings.

    Each stage halves the resolution, so ``s = 2 ** len(channels)``.
    """

    def __init__(self, image_size: int, channels: tuple[int, ...], d_model: int) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels must name at least one stage")
        stride = 2 ** len(channels)
        if image_size % stride:
            raise ValueError(f"image_size {image_size} must be divisible by {stride}")
        self.grid = image_size // stride
        stages: list[nn.Module] = []
        previous = 1
        for width in channels:
            stages.append(ResidualBlock(previous, width, 2))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.proj = nn.Linear(previous, d_model)
        self.pos = nn.Parameter(torch.zeros(1, self.grid * self.grid, d_model))
        nn.init.trunc_normal_(self.pos, std=0.02)

    @property
    def backbone(self) -> nn.Module:
        return self.stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stages(x)
        tokens = features.flatten(2).transpose(1, 2)
        return self.proj(tokens) + self.pos


class TimmEncoder(nn.Module):
    """A timm backbone's last feature map (CNN) or token sequence (ViT) projected to
    ``d_model``, plus learned position embeddings over its tokens."""

    def __init__(self, timm_name: str, image_size: int, d_model: int, **timm_kwargs: Any) -> None:
        super().__init__()
        import timm

        self.timm_name = timm_name
        self.backbone = timm.create_model(
            timm_name,
            pretrained=False,  # never download: weights come from --init-weights only
            in_chans=1,
            num_classes=0,
            global_pool="",
            **timm_kwargs,
        )
        with torch.no_grad():
            was_training = self.backbone.training
            self.backbone.eval()
            probe = self._features(torch.zeros(1, 1, image_size, image_size))
            self.backbone.train(was_training)
        self.num_tokens, width = int(probe.shape[1]), int(probe.shape[2])
        self.proj = nn.Linear(width, d_model)
        self.pos = nn.Parameter(torch.zeros(1, self.num_tokens, d_model))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.backbone.forward_features(x)  # type: ignore[operator]
        if features.dim() == 4:  # CNN: [N, C, h, w] -> [N, h*w, C]
            return features.flatten(2).transpose(1, 2)
        return features  # ViT: [N, tokens, C] (class token included)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self._features(x)) + self.pos


EncoderFactory = Callable[..., nn.Module]
_ENCODERS: dict[str, EncoderFactory] = {}


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    def wrap(factory: EncoderFactory) -> EncoderFactory:
        if name in _ENCODERS:
            raise ValueError(f"encoder {name!r} is already registered")
        _ENCODERS[name] = factory
        return factory

    return wrap


def list_encoders() -> list[str]:
    return sorted(_ENCODERS)


def create_encoder(
    name: str, *, image_size: int, d_model: int, channels: tuple[int, ...] = ()
) -> nn.Module:
    """Build a registered encoder with random weights."""
    try:
        factory = _ENCODERS[name]
    except KeyError:
        raise ValueError(
            f"unknown encoder {name!r}; registered encoders: {list_encoders()}"
        ) from None
    return factory(image_size=image_size, d_model=d_model, channels=channels)


@register_encoder("cnn")
def _cnn(*, image_size: int, d_model: int, channels: tuple[int, ...]) -> nn.Module:
    return ConvEncoder(image_size, channels, d_model)


@register_encoder("densenet121")
def _densenet121(*, image_size: int, d_model: int, channels: tuple[int, ...]) -> nn.Module:
    return TimmEncoder("densenet121", image_size, d_model)


@register_encoder("resnet50")
def _resnet50(*, image_size: int, d_model: int, channels: tuple[int, ...]) -> nn.Module:
    return TimmEncoder("resnet50", image_size, d_model)


@register_encoder("vit_small")
def _vit_small(*, image_size: int, d_model: int, channels: tuple[int, ...]) -> nn.Module:
    return TimmEncoder("vit_small_patch16_224", image_size, d_model, img_size=image_size)


def load_init_weights(encoder: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a local weights file (``torch.save`` state dict or ``.safetensors``) into the
    encoder's backbone; returns (missing, unexpected) keys.

    A first convolution trained on RGB is summed over its colour channels (timm's
    ``adapt_input_conv``), so ImageNet weights fit the one-channel radiograph input; the
    classifier of the source model is left out.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: initial weights file not found (--init-weights)")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: dict[str, torch.Tensor] = load_file(str(file))
    else:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
        state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    backbone = encoder.backbone if hasattr(encoder, "backbone") else encoder
    assert isinstance(backbone, nn.Module)
    own = backbone.state_dict()
    from timm.models import adapt_input_conv

    fitted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            continue
        if value.dim() == 4 and own[key].dim() == 4 and value.shape[1] != own[key].shape[1]:
            value = adapt_input_conv(own[key].shape[1], value)
        if value.shape != own[key].shape:
            logger.warning(
                "init weights: %s has shape %s, model %s; skipped",
                key,
                tuple(value.shape),
                tuple(own[key].shape),
            )
            continue
        fitted[key] = value
    if not fitted:
        raise ValueError(
            f"{file}: no tensor matches the {type(backbone).__name__} backbone; pass weights of "
            "the same architecture"
        )
    result = backbone.load_state_dict(fitted, strict=False)
    unexpected = sorted(set(state) - set(fitted))
    logger.info(
        "init weights from %s: %d tensors loaded, %d missing, %d left out",
        file,
        len(fitted),
        len(result.missing_keys),
        len(unexpected),
    )
    return list(result.missing_keys), unexpected
