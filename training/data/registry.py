"""The dataset registry: ``create_dataset("iu_xray", root, split="test")`` and friends."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from training.data.base import ChestXrayDataset
from training.exceptions import UnknownDatasetError

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, type[ChestXrayDataset]] = {}

T = TypeVar("T", bound=type[ChestXrayDataset])


def register_dataset(name: str) -> Callable[[T], T]:
    """Class decorator: make an adapter available to :func:`create_dataset` as ``name``."""

    def decorate(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"dataset name {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_datasets() -> tuple[str, ...]:
    """The registered dataset names, sorted."""
    return tuple(sorted(_REGISTRY))


def create_dataset(
    name: str, root: str | Path, split: str | None = None, **kwargs: Any
) -> ChestXrayDataset:
    """The dataset ``name`` read from ``root``; ``kwargs`` go to that adapter."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise UnknownDatasetError(name, list_datasets()) from None
    return cls(root, split=split, **kwargs)
