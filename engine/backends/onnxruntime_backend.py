"""ONNX Runtime backend: the CPU default; uses the CUDA execution provider on ``cuda``."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.artifact import DECODER_GRAPH, ENCODER_GRAPH, EngineArtifact
from engine.backends.base import Backend, EncoderOutput, StepOutput, register_backend
from engine.exceptions import BackendError, IncompatibleArtifactError

logger = logging.getLogger(__name__)


def _providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


@register_backend("onnxruntime")
class OnnxRuntimeBackend(Backend):
    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        try:
            providers = _providers()
        except ImportError:
            return "onnxruntime is not installed"
        if device.startswith("cuda") and "CUDAExecutionProvider" not in providers:
            return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
        return None

    def __init__(
        self, artifact: EngineArtifact, device: str = "cpu", threads: int = 0, **_: Any
    ) -> None:
        super().__init__(artifact, device)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0: one per physical core
        if device.startswith("cuda"):
            index = int(device.split(":")[1]) if ":" in device else 0
            providers: list[Any] = [
                ("CUDAExecutionProvider", {"device_id": index}),
                "CPUExecutionProvider",
            ]
        else:
            providers = ["CPUExecutionProvider"]
        manifest = artifact.manifest
        self._sessions = {}
        for graph in (ENCODER_GRAPH, DECODER_GRAPH):
            path = artifact.path(manifest.graphs[graph].onnx)
            try:
                self._sessions[graph] = onnxruntime.InferenceSession(
                    str(path), options, providers=providers
                )
            except Exception as exc:  # ORT raises its own untyped errors for a bad model
                raise BackendError(
                    f"{path}: ONNX Runtime cannot load this graph ({exc}); re-export the engine"
                ) from exc
        self._check_shapes()

    def _check_shapes(self) -> None:
        manifest = self.artifact.manifest
        expected = {
            (ENCODER_GRAPH, "probs", -1): len(manifest.findings),
            (ENCODER_GRAPH, "boxes", 1): len(manifest.locatable_findings),
            (DECODER_GRAPH, "logits", -1): manifest.decoder.vocab_size,
        }
        for (graph, output, axis), size in expected.items():
            session = self._sessions[graph]
            outputs = {o.name: o.shape for o in session.get_outputs()}
            names = tuple(i.name for i in session.get_inputs()), tuple(outputs)
            spec = manifest.graphs[graph]
            if names != (spec.inputs, spec.outputs):
                raise IncompatibleArtifactError(
                    f"{spec.onnx}: inputs/outputs {names} differ from the manifest's "
                    f"{(spec.inputs, spec.outputs)}; re-export the engine",
                    path=spec.onnx,
                )
            actual = outputs[output][axis]
            if isinstance(actual, int) and actual != size:
                raise IncompatibleArtifactError(
                    f"{spec.onnx}: output {output} has {actual} entries on axis {axis} but the "
                    f"manifest implies {size} (finding set or vocabulary mismatch); re-export",
                    path=spec.onnx,
                )

    def encode(self, images: NDArray[np.float32]) -> EncoderOutput:
        # Outputs in the manifest's order: the four every artifact has, then "features" (1.2).
        outputs = self._sessions[ENCODER_GRAPH].run(
            None, {"images": np.ascontiguousarray(images, dtype=np.float32)}
        )
        return EncoderOutput(*outputs)

    def decode_step(
        self,
        tokens: NDArray[np.int64],
        cross_keys: NDArray[np.float32],
        cross_values: NDArray[np.float32],
        past_keys: NDArray[np.float32],
        past_values: NDArray[np.float32],
    ) -> StepOutput:
        logits, keys, values = self._sessions[DECODER_GRAPH].run(
            None,
            {
                "tokens": np.ascontiguousarray(tokens, dtype=np.int64),
                "cross_keys": np.ascontiguousarray(cross_keys),
                "cross_values": np.ascontiguousarray(cross_values),
                "past_keys": np.ascontiguousarray(past_keys),
                "past_values": np.ascontiguousarray(past_values),
            },
        )
        return StepOutput(logits, keys, values)

    def describe(self) -> str:
        providers = self._sessions[ENCODER_GRAPH].get_providers()
        return f"onnxruntime ({providers[0]})"
