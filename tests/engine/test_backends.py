"""Backend registry, fallback, and agreement of PyTorch and ONNX Runtime (CPU).

Stated tolerance: encoder outputs and decoder logits agree within 1e-4 (float32 on CPU; the
kernels differ only in summation order), and the decoded token ids are identical.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from pydicom.dataset import Dataset

from engine.artifact import EngineArtifact
from engine.backends import (
    available_backends,
    backend_class,
    create_backend,
    registered_backends,
)
from engine.exceptions import BackendError, BackendUnavailableError
from engine.runtime import Engine, create_engine

TOLERANCE = 1e-4


def _trt_reason() -> str | None:
    return backend_class("tensorrt").unavailable_reason("cuda")


def _study_images(engine: Engine, datasets: dict[str, Dataset]) -> np.ndarray:
    # The canine lateral DX alone is not reported (no frontal chest image): left out.
    chest = [ds for name, ds in datasets.items() if not name.startswith("highdicom")]
    return np.stack([engine.prepare_study([ds]).images for ds in chest])


def test_registry_names_and_availability() -> None:
    assert registered_backends() == ["onnxruntime", "tensorrt", "torch"]
    available = available_backends()
    assert {"onnxruntime", "torch"} <= set(available)
    with pytest.raises(BackendError, match="unknown engine backend 'tvm'"):
        backend_class("tvm")


def test_tensorrt_falls_back_to_onnxruntime_with_warning(
    tiny_artifact: EngineArtifact, caplog: pytest.LogCaptureFixture
) -> None:
    reason = _trt_reason()
    if reason is None:
        pytest.skip("TensorRT is usable here, so there is no fallback to observe")
    with caplog.at_level(logging.WARNING, logger="engine.backends.base"):
        backend = create_backend("tensorrt", tiny_artifact)
    assert backend.name == "onnxruntime"
    assert any("tensorrt unavailable" in r.getMessage() for r in caplog.records)
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        create_backend("tensorrt", tiny_artifact, fallback=False)


def test_torch_cuda_falls_back_to_cpu(
    tiny_artifact: EngineArtifact, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available, so there is no fallback to observe")
    with caplog.at_level(logging.WARNING, logger="engine.backends.base"):
        backend = create_backend("torch", tiny_artifact, device="cuda")
    assert backend.device == "cpu"
    assert any("falling back to torch on cpu" in r.getMessage() for r in caplog.records)


def test_encoder_outputs_agree(
    ort_engine: Engine, torch_engine: Engine, real_datasets: dict[str, Dataset]
) -> None:
    images = _study_images(ort_engine, real_datasets)
    a = ort_engine.backend.encode(images)
    b = torch_engine.backend.encode(images)
    for name in ("probs", "boxes", "cross_keys", "cross_values"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape
        assert float(np.abs(x - y).max()) <= TOLERANCE, name


def test_decoder_step_agrees_with_cache(ort_engine: Engine, torch_engine: Engine) -> None:
    rng = np.random.default_rng(0)
    spec = ort_engine.artifact.manifest.decoder
    encoded = ort_engine.backend.encode(rng.standard_normal((2, 1, 64, 64), dtype=np.float32))
    cross = (encoded.cross_keys, encoded.cross_values)
    keys, values = ort_engine.backend.empty_cache(2)
    tk, tv = keys, values
    for step in range(5):
        tokens = rng.integers(0, spec.vocab_size, size=(2, 1))
        a = ort_engine.backend.decode_step(tokens, *cross, keys, values)
        b = torch_engine.backend.decode_step(tokens, *cross, tk, tv)
        assert a.keys.shape == (2, spec.num_layers, spec.num_heads, step + 1, spec.head_dim)
        assert float(np.abs(a.logits - b.logits).max()) <= TOLERANCE
        keys, values, tk, tv = a.keys, a.values, b.keys, b.values


@pytest.mark.parametrize("num_beams", [1, 3])
def test_decoded_tokens_identical(
    tiny_artifact: EngineArtifact, real_datasets: dict[str, Dataset], num_beams: int
) -> None:
    studies = [[ds] for name, ds in real_datasets.items() if not name.startswith("highdicom")]
    ort = create_engine(
        tiny_artifact,
        "onnxruntime",
        allow_test_artifact=True,
        num_beams=num_beams,
        no_repeat_ngram_size=2,
    )
    pt = create_engine(
        tiny_artifact,
        "torch",
        allow_test_artifact=True,
        num_beams=num_beams,
        no_repeat_ngram_size=2,
    )
    a, b = ort.report_studies(studies), pt.report_studies(studies)
    assert [r.sections for r in a] == [r.sections for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert [f.presence for f in ra.findings] == [f.presence for f in rb.findings]
        np.testing.assert_allclose(
            [f.probability for f in ra.findings],
            [f.probability for f in rb.findings],
            atol=TOLERANCE,
        )


@pytest.mark.gpu
@pytest.mark.skipif(_trt_reason() is not None, reason=f"TensorRT unusable: {_trt_reason()}")
def test_tensorrt_agrees_with_onnxruntime(
    tiny_artifact: EngineArtifact,
    ort_engine: Engine,
    real_datasets: dict[str, Dataset],
    tmp_path: object,
) -> None:
    """FP16 plan built from the ONNX graph; FP16 tolerance 2e-2 on probabilities."""
    trt = create_backend("tensorrt", tiny_artifact, fallback=False, cache_dir=str(tmp_path))
    images = _study_images(ort_engine, real_datasets)
    a, b = ort_engine.backend.encode(images), trt.encode(images)
    assert float(np.abs(a.probs - b.probs).max()) <= 2e-2
    keys, values = trt.empty_cache(len(images))
    step = trt.decode_step(
        np.ones((len(images), 1), np.int64), a.cross_keys, a.cross_values, keys, values
    )
    ref = ort_engine.backend.decode_step(
        np.ones((len(images), 1), np.int64), a.cross_keys, a.cross_values, keys, values
    )
    assert float(np.abs(step.logits - ref.logits).max()) <= 5e-2
    # A second backend reuses the cached plan instead of building again.
    again = create_backend("tensorrt", tiny_artifact, fallback=False, cache_dir=str(tmp_path))
    np.testing.assert_allclose(again.encode(images).probs, b.probs, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(_trt_reason() is not None, reason=f"TensorRT unusable: {_trt_reason()}")
def test_tensorrt_plans_baked_into_the_artifact(
    tiny_artifact_dir: object, tmp_path: object
) -> None:
    import shutil
    from pathlib import Path

    from engine.artifact import load_artifact
    from engine.backends.tensorrt_backend import build_tensorrt_plans

    copy = Path(shutil.copytree(str(tiny_artifact_dir), Path(str(tmp_path)) / "engine"))
    baked = build_tensorrt_plans(copy, max_batch=8)
    assert {p.graph for p in baked.manifest.tensorrt_plans} == {"encoder", "decoder_step"}
    reloaded = load_artifact(copy)  # checksums cover the plans too
    backend = create_backend(
        "tensorrt", reloaded, fallback=False, cache_dir=str(Path(str(tmp_path)) / "empty")
    )
    assert not (Path(str(tmp_path)) / "empty").exists()  # nothing built: the plans were used
    assert backend.describe().startswith("tensorrt")
