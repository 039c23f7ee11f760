"""TensorRT backend (NVIDIA GPU): a plan from the artifact, or one built from ONNX and cached.

A TensorRT plan only runs on the GPU model and TensorRT version it was built with, so the
artifact's plans are used when both match; otherwise the ONNX graph is built once (FP16 by
default) with an optimization profile covering the batch sizes and cache lengths decoding
uses, and the plan is cached under ``cache_dir`` keyed by graph checksum, TensorRT version,
compute capability and precision. Device buffers are PyTorch CUDA tensors.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.artifact import (
    DECODER_GRAPH,
    DECODER_OUTPUTS,
    ENCODER_GRAPH,
    EngineArtifact,
)
from engine.backends.base import Backend, EncoderOutput, StepOutput, register_backend
from engine.exceptions import BackendError

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(os.environ.get("CXR_TRT_CACHE", Path.home() / ".cache" / "cxr-engine-trt"))


@register_backend("tensorrt")
class TensorRTBackend(Backend):
    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        if not device.startswith("cuda"):
            return "TensorRT runs on an NVIDIA GPU only"
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return "the tensorrt Python package is not installed (pip install tensorrt)"
        try:
            import torch
        except ImportError:
            return "torch with CUDA is needed for TensorRT device buffers"
        if not torch.cuda.is_available():
            return "no CUDA device is visible"
        return None

    def __init__(
        self,
        artifact: EngineArtifact,
        device: str = "cuda",
        cache_dir: str | Path | None = None,
        precision: str = "fp16",
        max_batch: int = 16,
        workspace_bytes: int = 2 << 30,
        **_: Any,
    ) -> None:
        super().__init__(artifact, device)
        import tensorrt as trt
        import torch

        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be 'fp16' or 'fp32', got {precision!r}")
        self._trt, self._torch = trt, torch
        self._device = torch.device(device)
        torch.cuda.set_device(self._device)
        props = torch.cuda.get_device_properties(self._device)
        self._gpu_name = props.name
        self._capability = f"{props.major}.{props.minor}"
        self._precision = precision
        self._max_batch = max_batch
        self._workspace = workspace_bytes
        self._cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engines: dict[str, Any] = {}
        self._contexts: dict[str, Any] = {}
        for graph in (ENCODER_GRAPH, DECODER_GRAPH):
            plan = self._plan(graph)
            engine = self._runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise BackendError(
                    f"TensorRT could not deserialize the {graph} plan; delete "
                    f"{self._cache_dir} and retry"
                )
            self._engines[graph] = engine
            self._contexts[graph] = engine.create_execution_context()
        self._stream = torch.cuda.Stream(device=self._device)

    # -- plans -----------------------------------------------------------------------------

    def _plan(self, graph: str) -> bytes:
        manifest = self.artifact.manifest
        for spec in manifest.tensorrt_plans:
            if (
                spec.graph == graph
                and spec.tensorrt_version == self._trt.__version__
                and spec.compute_capability == self._capability
                and spec.precision == self._precision
                and spec.max_batch >= self._max_batch
            ):
                logger.info("TensorRT %s: using plan %s from the artifact", graph, spec.file)
                return self.artifact.path(spec.file).read_bytes()
        onnx_name = manifest.graphs[graph].onnx
        cached = self.cache_path(graph)
        if cached.is_file():
            logger.info("TensorRT %s: using cached plan %s", graph, cached)
            return cached.read_bytes()
        logger.warning(
            "TensorRT %s: building a %s plan for %s (minutes, once)",
            graph,
            self._precision,
            self._gpu_name,
        )
        plan = self._build(graph, self.artifact.path(onnx_name))
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        partial.write_bytes(plan)
        partial.replace(cached)  # atomic: a crash never leaves a truncated plan in the cache
        return plan

    def cache_path(self, graph: str) -> Path:
        """Where the plan built here for ``graph`` is cached."""
        digest = self.artifact.manifest.files[self.artifact.manifest.graphs[graph].onnx][:16]
        return self._cache_dir / (
            f"{graph}-{digest}-trt{self._trt.__version__}-sm{self._capability}-"
            f"{self._precision}-b{self._max_batch}.plan"
        )

    def _profile_shapes(self, graph: str) -> dict[str, tuple[tuple[int, ...], ...]]:
        manifest = self.artifact.manifest
        spec, dec = manifest.input, manifest.decoder
        b = self._max_batch
        opt = max(1, b // 2)
        if graph == ENCODER_GRAPH:
            v = len(spec.views)
            return {
                "images": (
                    (1, v, spec.height, spec.width),
                    (opt, v, spec.height, spec.width),
                    (b, v, spec.height, spec.width),
                )
            }
        cache = (
            (1, dec.num_layers, dec.num_heads, 0, dec.head_dim),
            (opt, dec.num_layers, dec.num_heads, dec.max_positions // 2, dec.head_dim),
            (b, dec.num_layers, dec.num_heads, dec.max_positions - 1, dec.head_dim),
        )
        cross = tuple(
            (n, dec.num_layers, dec.num_heads, dec.memory_tokens, dec.head_dim) for n in (1, opt, b)
        )
        return {
            "tokens": ((1, 1), (opt, 1), (b, 1)),
            "cross_keys": cross,
            "cross_values": cross,
            "past_keys": cache,
            "past_values": cache,
        }

    def _build(self, graph: str, onnx_path: Path) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"{onnx_path}: TensorRT cannot parse this graph: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self._workspace)
        if self._precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in self._profile_shapes(graph).items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"{onnx_path}: TensorRT failed to build a plan (see its log)")
        return bytes(serialized)

    # -- execution -------------------------------------------------------------------------

    def _torch_dtype(self, trt_dtype: Any) -> Any:
        trt, torch = self._trt, self._torch
        table = {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.int64: torch.int64,
            trt.int32: torch.int32,
            trt.bool: torch.bool,
        }
        return table[trt_dtype]

    def _run(
        self, graph: str, feeds: dict[str, NDArray[Any]], outputs: tuple[str, ...]
    ) -> list[NDArray[Any]]:
        torch = self._torch
        engine, context = self._engines[graph], self._contexts[graph]
        keep: list[Any] = []  # device buffers must outlive the launch
        for name, array in feeds.items():
            tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self._device)
            tensor = tensor.to(self._torch_dtype(engine.get_tensor_dtype(name)))
            # TensorRT rejects a null address even for an empty (zero-length cache) tensor.
            buffer = (
                tensor
                if tensor.numel()
                else torch.empty(1, dtype=tensor.dtype, device=self._device)
            )
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, buffer.data_ptr())
            keep.append(buffer)
        results = []
        for name in outputs:
            shape = tuple(context.get_tensor_shape(name))
            tensor = torch.empty(
                shape, dtype=self._torch_dtype(engine.get_tensor_dtype(name)), device=self._device
            )
            context.set_tensor_address(name, tensor.data_ptr())
            results.append(tensor)
        if not context.execute_async_v3(self._stream.cuda_stream):
            raise BackendError(f"TensorRT failed to run the {graph} graph")
        self._stream.synchronize()
        return [
            t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy() for t in results
        ]

    def encode(self, images: NDArray[np.float32]) -> EncoderOutput:
        # The plan is built from encoder.onnx, so it has the manifest's outputs ("features"
        # last, when the artifact has it).
        outputs = self.artifact.manifest.graphs[ENCODER_GRAPH].outputs
        return EncoderOutput(*self._run(ENCODER_GRAPH, {"images": images}, outputs))

    def decode_step(
        self,
        tokens: NDArray[np.int64],
        cross_keys: NDArray[np.float32],
        cross_values: NDArray[np.float32],
        past_keys: NDArray[np.float32],
        past_values: NDArray[np.float32],
    ) -> StepOutput:
        logits, keys, values = self._run(
            DECODER_GRAPH,
            {
                "tokens": tokens,
                "cross_keys": cross_keys,
                "cross_values": cross_values,
                "past_keys": past_keys,
                "past_values": past_values,
            },
            DECODER_OUTPUTS,
        )
        return StepOutput(logits, keys, values)

    @property
    def gpu_name(self) -> str:
        return str(self._gpu_name)

    @property
    def compute_capability(self) -> str:
        return self._capability

    def describe(self) -> str:
        return f"tensorrt {self._trt.__version__} {self._precision} on {self._gpu_name}"


def build_tensorrt_plans(
    artifact_dir: str | Path, *, precision: str = "fp16", max_batch: int = 16
) -> EngineArtifact:
    """Build plans for this GPU and store them in the artifact (manifest rewritten).

    Run on the hospital's GPU once; the runtime then loads the plans instead of building.
    """
    import shutil

    import tensorrt as trt

    from engine.artifact import TensorRTPlanSpec, load_artifact, write_manifest

    artifact = load_artifact(artifact_dir)
    backend = TensorRTBackend(artifact, precision=precision, max_batch=max_batch)
    plans = list(artifact.manifest.tensorrt_plans)
    (artifact.root / "tensorrt").mkdir(exist_ok=True)
    for graph in (ENCODER_GRAPH, DECODER_GRAPH):
        relative = f"tensorrt/{backend.cache_path(graph).name}"
        if not backend.cache_path(graph).is_file():  # the plan came from the artifact itself
            continue
        shutil.copyfile(backend.cache_path(graph), artifact.root / relative)
        plans.append(
            TensorRTPlanSpec(
                file=relative,
                graph=graph,  # type: ignore[arg-type]
                gpu_name=backend.gpu_name,
                compute_capability=backend.compute_capability,
                tensorrt_version=trt.__version__,
                precision=precision,  # type: ignore[arg-type]
                max_batch=max_batch,
            )
        )
    return write_manifest(
        artifact.root, artifact.manifest.model_copy(update={"tensorrt_plans": tuple(plans)})
    )
