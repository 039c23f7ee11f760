"""Datasets, models, training recipes, evaluation and export."""

__version__ = "0.1.0"
