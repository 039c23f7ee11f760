"""What every backend does, and the registry that creates backends by name.

A backend runs the artifact's two graphs and nothing else: ``encode`` (images -> finding
probabilities, boxes, image keys/values for the decoder) and ``decode_step`` (one token per
sequence with a key/value cache). Inputs and outputs are NumPy arrays so decoding and
reporting are backend-agnostic.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from engine.artifact import EngineArtifact
from engine.exceptions import BackendError, BackendUnavailableError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderOutput:
    probs: NDArray[np.float32]  # [B, F] finding probabilities, manifest order
    boxes: NDArray[np.float32]  # [B, L, 4] normalized boxes, one per locatable finding
    cross_keys: NDArray[np.float32]  # [B, layers, heads, S, head_dim] image tokens' keys
    cross_values: NDArray[np.float32]
    #: [B, D] pooled image features (format 1.2); None when the encoder has no such output.
    features: NDArray[np.float32] | None = None


@dataclass(frozen=True)
class StepOutput:
    logits: NDArray[np.float32]  # [B, V] for the token just fed
    keys: NDArray[np.float32]  # [B, layers, heads, past + 1, head_dim]
    values: NDArray[np.float32]


class Backend(ABC):
    """Runs an artifact's graphs on one device."""

    name: ClassVar[str] = ""

    def __init__(self, artifact: EngineArtifact, device: str = "cpu") -> None:
        self.artifact = artifact
        self.device = device

    @classmethod
    @abstractmethod
    def unavailable_reason(cls, device: str) -> str | None:
        """Why this backend cannot run on ``device`` here, or ``None`` when it can."""

    @abstractmethod
    def encode(self, images: NDArray[np.float32]) -> EncoderOutput:
        """``images[B, V, H, W]`` (preprocessed) -> encoder outputs."""

    @abstractmethod
    def decode_step(
        self,
        tokens: NDArray[np.int64],
        cross_keys: NDArray[np.float32],
        cross_values: NDArray[np.float32],
        past_keys: NDArray[np.float32],
        past_values: NDArray[np.float32],
    ) -> StepOutput:
        """``tokens[B, 1]`` after the cached positions -> next-token logits and grown cache."""

    def empty_cache(self, batch: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        spec = self.artifact.manifest.decoder
        shape = (batch, spec.num_layers, spec.num_heads, 0, spec.head_dim)
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    def describe(self) -> str:
        return f"{self.name} on {self.device}"


B = TypeVar("B", bound=type[Backend])
_BACKENDS: dict[str, type[Backend]] = {}
#: Where a backend falls back to when it cannot run: TensorRT to ONNX Runtime on the same GPU
#: (which itself falls back to CPU), anything on CUDA to the same backend on CPU.
_FALLBACK: dict[str, str] = {"tensorrt": "onnxruntime"}
_DEFAULT_DEVICE: dict[str, str] = {"tensorrt": "cuda"}


def register_backend(name: str) -> Callable[[B], B]:
    def decorator(cls: B) -> B:
        if name in _BACKENDS:
            raise ValueError(f"backend {name!r} is already registered")
        cls.name = name
        _BACKENDS[name] = cls
        return cls

    return decorator


def registered_backends() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(name: str) -> type[Backend]:
    try:
        return _BACKENDS[name]
    except KeyError:
        raise BackendError(
            f"unknown engine backend {name!r}; choose one of {registered_backends()}"
        ) from None


def available_backends(device: str | None = None) -> list[str]:
    """Backends that can run here (on ``device``, or on their default device)."""
    return [
        name
        for name, cls in sorted(_BACKENDS.items())
        if cls.unavailable_reason(device or _DEFAULT_DEVICE.get(name, "cpu")) is None
    ]


def create_backend(
    name: str,
    artifact: EngineArtifact,
    *,
    device: str | None = None,
    fallback: bool = True,
    **options: Any,
) -> Backend:
    """Create backend ``name`` for ``artifact``; fall back with a warning when it cannot run.

    ``device`` is ``"cpu"`` or ``"cuda"`` (``"cuda:N"``); each backend has a default.
    With ``fallback=False`` an unusable backend raises :class:`BackendUnavailableError`.
    """
    cls = backend_class(name)
    chosen_device = device or _DEFAULT_DEVICE.get(name, "cpu")
    reason = cls.unavailable_reason(chosen_device)
    if reason is None:
        return cls(artifact, device=chosen_device, **options)
    if not fallback:
        raise BackendUnavailableError(
            f"backend {name!r} cannot run on {chosen_device}: {reason}; install what is "
            "missing or configure another backend"
        )
    if name in _FALLBACK:
        target = _FALLBACK[name]
        logger.warning(
            "backend %s unavailable on %s (%s); falling back to %s",
            name,
            chosen_device,
            reason,
            target,
        )
        return create_backend(target, artifact, device=chosen_device, fallback=True)
    if chosen_device != "cpu" and cls.unavailable_reason("cpu") is None:
        logger.warning(
            "backend %s unavailable on %s (%s); falling back to %s on cpu",
            name,
            chosen_device,
            reason,
            name,
        )
        return cls(artifact, device="cpu", **options)
    raise BackendUnavailableError(
        f"backend {name!r} cannot run: {reason}; install what is missing or configure another "
        "backend"
    )
