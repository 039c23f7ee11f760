"""Datasets: one record type and an adapter per public layout, behind ``create_dataset``."""

from training.data import chexpert_plus, iu_xray, mimic_cxr, nih, padchest, padchest_gr
from training.data.base import ChestXrayDataset
from training.data.records import Box, ImageRef, StudyRecord
from training.data.registry import create_dataset, list_datasets, register_dataset

__all__ = [
    "Box",
    "ChestXrayDataset",
    "ImageRef",
    "StudyRecord",
    "chexpert_plus",
    "create_dataset",
    "iu_xray",
    "list_datasets",
    "mimic_cxr",
    "nih",
    "padchest",
    "padchest_gr",
    "register_dataset",
]
