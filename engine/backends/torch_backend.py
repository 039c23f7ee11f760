"""PyTorch backend: runs the artifact's ``torch.export`` programs (``*.pt2``) op by op.

Needs only ``torch`` (imported lazily, here alone), never the training code.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.artifact import DECODER_GRAPH, ENCODER_GRAPH, EngineArtifact
from engine.backends.base import Backend, EncoderOutput, StepOutput, register_backend
from engine.exceptions import BackendError, IncompatibleArtifactError

logger = logging.getLogger(__name__)


@register_backend("torch")
class TorchBackend(Backend):
    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        try:
            import torch
        except ImportError:
            return "torch is not installed (pip install 'cxr-reporting-node[torch]')"
        if device.startswith("cuda") and not torch.cuda.is_available():
            return "torch sees no CUDA device"
        return None

    def __init__(
        self, artifact: EngineArtifact, device: str = "cpu", threads: int = 0, **_: Any
    ) -> None:
        super().__init__(artifact, device)
        import torch

        if threads > 0:
            # Process-wide in PyTorch. On a busy CPU, OpenMP threads that outnumber the free
            # cores spin at barriers and slow decoding by an order of magnitude.
            torch.set_num_threads(threads)

        self._torch = torch
        self._device = torch.device(device)
        self._modules = {}
        for graph in (ENCODER_GRAPH, DECODER_GRAPH):
            relative = artifact.manifest.graphs[graph].torch
            if relative is None:
                raise IncompatibleArtifactError(
                    f"{artifact.root}: graph {graph} has no torch.export program; the PyTorch "
                    "backend needs one, use onnxruntime or re-export",
                    path=graph,
                )
            try:
                with warnings.catch_warnings():
                    # torch's own deserializer warns about its internal pytree API.
                    warnings.simplefilter("ignore", FutureWarning)
                    program = torch.export.load(str(artifact.path(relative)))
            except Exception as exc:  # torch raises many types for a bad archive
                raise BackendError(
                    f"{artifact.path(relative)}: torch.export.load failed ({exc}); re-export "
                    "the engine with a matching torch version"
                ) from exc
            if self._device.type != "cpu":
                # Constants traced on CPU (e.g. arange) must move with the weights.
                from torch.export.passes import move_to_device_pass

                program = move_to_device_pass(program, self._device)
            self._modules[graph] = program.module()

    def _in(self, array: NDArray[Any]) -> Any:
        return self._torch.from_numpy(np.ascontiguousarray(array)).to(self._device)

    @staticmethod
    def _out(tensor: Any) -> NDArray[np.float32]:
        return np.asarray(tensor.detach().cpu().numpy())

    def encode(self, images: NDArray[np.float32]) -> EncoderOutput:
        with self._torch.inference_mode():
            outputs = self._modules[ENCODER_GRAPH](self._in(images.astype(np.float32)))
        return EncoderOutput(*(self._out(t) for t in outputs))

    def decode_step(
        self,
        tokens: NDArray[np.int64],
        cross_keys: NDArray[np.float32],
        cross_values: NDArray[np.float32],
        past_keys: NDArray[np.float32],
        past_values: NDArray[np.float32],
    ) -> StepOutput:
        with self._torch.inference_mode():
            logits, keys, values = self._modules[DECODER_GRAPH](
                self._in(tokens.astype(np.int64)),
                self._in(cross_keys),
                self._in(cross_values),
                self._in(past_keys),
                self._in(past_values),
            )
        return StepOutput(self._out(logits), self._out(keys), self._out(values))

    def describe(self) -> str:
        return f"torch {self._torch.__version__} ({self._device})"
