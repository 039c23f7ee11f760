"""Engine backends, created by name: ``onnxruntime`` (CPU default), ``torch``, ``tensorrt``."""

from engine.backends import (  # noqa: F401  (importing registers each backend)
    onnxruntime_backend,
    tensorrt_backend,
    torch_backend,
)
from engine.backends.base import (
    Backend,
    EncoderOutput,
    StepOutput,
    available_backends,
    backend_class,
    create_backend,
    register_backend,
    registered_backends,
)

__all__ = [
    "Backend",
    "EncoderOutput",
    "StepOutput",
    "available_backends",
    "backend_class",
    "create_backend",
    "register_backend",
    "registered_backends",
]
