"""Errors of the training package; each message names the file at fault and what to do."""

from __future__ import annotations

from pathlib import Path


class TrainingError(Exception):
    """Base class of every error the training package raises on purpose."""


class DatasetError(TrainingError):
    """A dataset on disk cannot be read as the adapter expects."""


class DatasetFileNotFoundError(DatasetError, FileNotFoundError):
    """A file or folder a dataset adapter needs is missing."""

    def __init__(self, path: Path | str, fix: str) -> None:
        self.path = Path(path)
        self.fix = fix
        super().__init__(f"{self.path}: not found. {fix}")


class DatasetFormatError(DatasetError, ValueError):
    """A dataset file exists but its content does not match the published layout."""

    def __init__(self, path: Path | str, problem: str, fix: str) -> None:
        self.path = Path(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}. {fix}")


class UnknownDatasetError(TrainingError, KeyError):
    """``create_dataset`` was asked for a name that no adapter registered."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        self.name = name
        super().__init__(f"unknown dataset {name!r}; use one of: {', '.join(known)}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class PredictionsError(TrainingError, ValueError):
    """A predictions file cannot be matched to the dataset it is evaluated against."""

    def __init__(self, path: Path | str, problem: str, fix: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}. {fix}")


class MetricError(TrainingError):
    """A metric cannot be computed here (for example METEOR without a Java runtime)."""
