"""Report models: a timm-style registry (``create_model(name, **kw)``) and the networks."""

from training.models.cxr_report import (
    CXRModelConfig,
    CXRReportModel,
    DecoderStepGraph,
    EncoderGraph,
)
from training.models.registry import create_model, list_models, register_model

__all__ = [
    "CXRModelConfig",
    "CXRReportModel",
    "DecoderStepGraph",
    "EncoderGraph",
    "create_model",
    "list_models",
    "register_model",
]
