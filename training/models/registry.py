"""timm-style model registry: ``@register_model`` on a factory, ``create_model(name, **kw)``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., "nn.Module"])
_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(factory: F) -> F:
    """Register a factory under its function name; names are unique."""
    name = factory.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = factory
    return factory


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model with random weights (no pretrained weights are downloaded)."""
    try:
        factory = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {list_models()}") from None
    return factory(**kwargs)
