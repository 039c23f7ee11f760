"""The engine artifact: one self-describing directory (or tar archive) training writes and the
runtime loads.

Layout::

    manifest.json          what the artifact is (schema :class:`EngineManifest`) + file checksums
    encoder.onnx           image(s) -> finding probabilities, boxes, image keys/values
                           (1.2: and the pooled image features the image gate measures)
    decoder_step.onnx      one incremental decoding step with an explicit key/value cache
    encoder.pt2            the same graphs as ``torch.export`` programs (PyTorch backend)
    decoder_step.pt2
    tokenizer.json         Hugging Face ``tokenizers`` file
    finding_prompt.npz     (1.1) keys/values of the findings prompt tokens, when the decoder
                           attends to the predicted findings (``decoder.memory``)
    feature_stats.npz      (1.2) the training distribution of the encoder's features, for the
                           image gate (``gate.feature_stats``, engine.gate.FeatureStatistics)
    tensorrt/*.plan        optional TensorRT engines built for one GPU and TensorRT version

The manifest is the single source of truth the runtime reads: finding set (codes, Spanish
names, thresholds), input specification, decoding defaults. :func:`load_artifact` refuses a
corrupt, incomplete or incompatible artifact with an :class:`~engine.exceptions.ArtifactError`
naming the file and the reason.

Format history: 1.0 decoders attend to the image tokens only. 1.1 adds ``decoder.memory``
(image tokens, the findings prompt, or both), the ``prompt`` table and the training path
(``training.path``/``training.datasets``); a 1.0 manifest reads as a 1.1 one with an image-only
decoder, so this runtime serves both. 1.2 adds the encoder's optional ``features`` output
and the image gate (``gate.feature_stats`` with ``gate.max_feature_distance``); an artifact
without them is served with the image gate off (the runtime logs why).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.exceptions import (
    ArtifactError,
    ArtifactNotFoundError,
    ChecksumMismatchError,
    IncompatibleArtifactError,
    ManifestError,
)
from engine.gate import GateSpec
from engine.result import EngineIdentity, FindingCode

logger = logging.getLogger(__name__)

#: Format this runtime writes and reads. Major must match; a newer minor needs a newer runtime.
FORMAT_VERSION = "1.2"
MANIFEST_NAME = "manifest.json"
ENCODER_GRAPH = "encoder"
DECODER_GRAPH = "decoder_step"
ENCODER_INPUTS = ("images",)
ENCODER_OUTPUTS = ("probs", "boxes", "cross_keys", "cross_values")
#: Optional last encoder output (format 1.2): the pooled image features ``[B, D]``.
ENCODER_FEATURES = "features"
DECODER_INPUTS = ("tokens", "cross_keys", "cross_values", "past_keys", "past_values")
DECODER_OUTPUTS = ("logits", "present_keys", "present_values")

SectionTitle = Literal["Hallazgos", "Impresión"]
MemoryKind = Literal["image", "findings"]
#: Finding states of the prompt table's first axis.
PROMPT_STATES: tuple[str, ...] = ("absent", "uncertain", "present")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FindingSpec(_Strict):
    """One finding the model scores: its code, names and decision thresholds.

    A probability at or above ``threshold_present`` reads as present, at or below
    ``threshold_absent`` as absent, and anything between as uncertain.
    """

    key: str = Field(min_length=1)
    code_value: str = Field(min_length=1)
    code_scheme: str = Field(min_length=1)
    name_es: str = Field(min_length=1)
    name_en: str = ""
    locatable: bool = False
    #: False where the box head saw too few boxes of this finding in training to be trusted:
    #: its box is still computed (the graph has one per locatable finding) but no region or
    #: side is reported, so the SR, the presentation state and the text never show a place
    #: the model was not taught.
    report_region: bool = True
    #: False where training could not confirm the code against an authoritative source.
    code_verified: bool = True
    #: The code value in the local scheme ``99CXR`` (DICOM Code Value: 16 characters at most).
    local_code: str = Field(default="", max_length=16)
    threshold_present: float = Field(default=0.5, ge=0.0, le=1.0)
    threshold_absent: float = Field(default=0.2, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> FindingSpec:
        if self.threshold_absent > self.threshold_present:
            raise ValueError(
                f"finding {self.key!r}: threshold_absent {self.threshold_absent} exceeds "
                f"threshold_present {self.threshold_present}"
            )
        return self

    def to_code(self) -> FindingCode:
        """The code written into reports.

        An unconfirmed standard code is never emitted as SNOMED CT or RadLex: a wrong
        concept id in a PACS is worse than an honest local code, so the finding is coded in
        the node's private scheme ``99CXR`` under its local code until the code is confirmed
        (artifacts older than ``local_code``: the key, cut to Code Value's 16 characters).
        """
        if not self.code_verified:
            return FindingCode(
                value=self.local_code or self.key[:16],
                scheme="99CXR",
                meaning_es=self.name_es,
                meaning_en=self.name_en,
            )
        return FindingCode(
            value=self.code_value,
            scheme=self.code_scheme,
            meaning_es=self.name_es,
            meaning_en=self.name_en,
        )


class InputSpec(_Strict):
    """How images become the encoder's input tensor ``images[B, V, H, W]`` (float32)."""

    height: int = Field(gt=0)
    width: int = Field(gt=0)
    views: tuple[Literal["frontal", "lateral"], ...] = ("frontal",)
    resize: Literal["letterbox", "stretch"] = "letterbox"
    pad_value: float = 0.0
    mean: float = 0.5
    std: float = Field(default=0.25, gt=0.0)
    #: What fills the lateral slot when a study has none (R2Gen repeats the single view).
    missing_lateral: Literal["repeat_frontal", "zeros"] = "repeat_frontal"
    #: Intensity normalisation shared by training and serving (engine.preprocessing.intensity);
    #: an engine refuses an artifact made with another one.
    normalization: Literal["robust-percentile-v1"] = "robust-percentile-v1"
    #: Train-time letterbox: "random-aspect" places a share ``train_letterbox_p`` of training
    #: images at an aspect ratio (width/height) drawn from ``train_aspect_range``, so the model
    #: has seen the bars served portrait radiographs get (engine.preprocessing.geometry).
    train_letterbox: Literal["none", "random-aspect"] = "none"
    train_letterbox_p: float = Field(default=0.5, ge=0.0, le=1.0)
    train_aspect_range: tuple[float, float] = (0.8, 1.0)

    @model_validator(mode="after")
    def _frontal_first(self) -> InputSpec:
        if not self.views or self.views[0] != "frontal" or len(set(self.views)) != len(self.views):
            raise ValueError(f"views must start with 'frontal' and not repeat, got {self.views}")
        low, high = self.train_aspect_range
        if not 0 < low <= high:
            raise ValueError(f"train_aspect_range must be 0 < low <= high, got {(low, high)}")
        return self


class TokenizerSpec(_Strict):
    file: str = "tokenizer.json"
    bos_id: int = Field(ge=0)
    eos_id: int = Field(ge=0)
    pad_id: int = Field(ge=0)
    unk_id: int | None = None
    #: Section title as shown to the reader -> the special token that opens it in decoded text.
    section_tokens: dict[SectionTitle, int] = Field(default_factory=dict)


class DecoderSpec(_Strict):
    """Shapes of the decoder-step graph: self-attention cache ``[B, layers, heads, past,
    head_dim]`` and image keys/values ``[B, layers, heads, memory_tokens, head_dim]``."""

    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    memory_tokens: int = Field(gt=0)
    max_positions: int = Field(gt=1)
    #: What the decoder attends to, in memory order (1.0 artifacts: image tokens only).
    memory: tuple[MemoryKind, ...] = ("image",)

    @model_validator(mode="after")
    def _memory_kinds(self) -> DecoderSpec:
        if not self.memory or len(set(self.memory)) != len(self.memory):
            raise ValueError(f"decoder.memory must name image and/or findings once, {self.memory}")
        return self


class PromptSpec(_Strict):
    """The findings prompt (format 1.1): ``file`` (``.npz``) holds ``keys`` and ``values``
    ``[states, layers, heads, findings, head_dim]``; the runtime picks, for each finding in
    manifest order, the row of its predicted state (thresholds of :class:`FindingSpec`)."""

    file: str = "finding_prompt.npz"
    states: tuple[Literal["absent", "uncertain", "present"], ...] = (
        "absent",
        "uncertain",
        "present",
    )

class GraphSpec(_Strict):
    onnx: str
    torch: str | None = None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class TensorRTPlanSpec(_Strict):
    """A prebuilt TensorRT engine; valid only for the GPU and TensorRT version it was built on."""

    file: str
    graph: Literal["encoder", "decoder_step"]
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: Literal["fp32", "fp16"] = "fp16"
    #: Largest batch the plan's optimization profile accepts.
    max_batch: int = Field(default=16, ge=1)


class DecodingDefaults(_Strict):
    num_beams: int = Field(default=1, ge=1)
    max_length: int = Field(default=64, ge=1)
    min_length: int = Field(default=0, ge=0)
    length_penalty: float = 1.0
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    no_repeat_ngram_size: int = Field(default=0, ge=0)


class TrainingSummary(_Strict):
    #: ``unpaired``: encoder on labeled images, decoder on reports with the findings prompt;
    #: ``paired``: images and their reports end to end. Empty in 1.0 artifacts.
    path: Literal["", "paired", "unpaired"] = ""
    #: Datasets (and splits) that trained the engine, e.g. ``nih:train``.
    datasets: tuple[str, ...] = ()
    data: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    notes: str = ""


class ExportInfo(_Strict):
    torch_version: str = ""
    onnx_opset: int | None = None
    #: Max |ONNX Runtime - PyTorch| per graph output on the export check input.
    max_abs_diff: dict[str, float] = Field(default_factory=dict)
    tolerance: float = 1e-4


class EngineManifest(_Strict):
    """Schema of ``manifest.json`` (format :data:`FORMAT_VERSION`)."""

    format_version: str
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    created: datetime
    description: str = ""
    #: ``test`` artifacts hold random weights; the runtime refuses them unless told otherwise.
    purpose: Literal["production", "evaluation", "test"] = "production"
    model_family: str = ""
    training: TrainingSummary = Field(default_factory=TrainingSummary)
    input: InputSpec
    findings: tuple[FindingSpec, ...] = Field(min_length=1)
    languages: tuple[str, ...] = ("es",)
    tokenizer: TokenizerSpec
    decoder: DecoderSpec
    prompt: PromptSpec | None = None
    graphs: dict[str, GraphSpec]
    tensorrt_plans: tuple[TensorRTPlanSpec, ...] = ()
    decoding: DecodingDefaults = Field(default_factory=DecodingDefaults)
    #: Which writer gives the report its text: the decoder's ("neural", always checked
    #: against the coded findings) or the deterministic one ("structured"), see engine.writers.
    report_writer: Literal["structured", "neural"] = "neural"
    #: What the engine accepts (engine.gate); manifests without it get the defaults.
    gate: GateSpec = Field(default_factory=GateSpec)
    export: ExportInfo = Field(default_factory=ExportInfo)
    #: Relative path -> SHA-256 hex digest of every file in the artifact but the manifest.
    files: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> EngineManifest:
        keys = [f.key for f in self.findings]
        if len(set(keys)) != len(keys):
            raise ValueError(f"finding keys repeat: {keys}")
        for name, inputs, allowed in (
            (
                ENCODER_GRAPH,
                ENCODER_INPUTS,
                (ENCODER_OUTPUTS, (*ENCODER_OUTPUTS, ENCODER_FEATURES)),
            ),
            (DECODER_GRAPH, DECODER_INPUTS, (DECODER_OUTPUTS,)),
        ):
            graph = self.graphs.get(name)
            if graph is None:
                raise ValueError(f"graphs must describe {name!r}")
            if graph.inputs != inputs or graph.outputs not in allowed:
                raise ValueError(
                    f"graph {name!r} must have inputs {inputs} and outputs "
                    f"{' or '.join(map(str, allowed))}, got {graph.inputs} and {graph.outputs}"
                )
        if ("findings" in self.decoder.memory) != (self.prompt is not None):
            raise ValueError(
                "decoder.memory names 'findings' exactly when a prompt table is given; got "
                f"memory {self.decoder.memory} and prompt {self.prompt}"
            )
        if self.prompt is not None and _parse_version(self.format_version) < (1, 1):
            raise ValueError(f"a findings prompt needs format 1.1, got {self.format_version}")
        version = _parse_version(self.format_version)
        if self.has_image_features and version < (1, 2):
            raise ValueError(
                f"graphs.encoder.outputs: the {ENCODER_FEATURES!r} output needs format 1.2, "
                f"got {self.format_version}"
            )
        if self.gate.feature_stats is not None and not self.has_image_features:
            raise ValueError(
                "gate.feature_stats needs the encoder's "
                f"{ENCODER_FEATURES!r} output (graphs.encoder.outputs); re-export the engine"
            )
        ids = (self.tokenizer.bos_id, self.tokenizer.eos_id, self.tokenizer.pad_id)
        if max(ids) >= self.decoder.vocab_size:
            raise ValueError(f"special token ids {ids} exceed vocab_size {self.decoder.vocab_size}")
        return self

    @property
    def has_image_features(self) -> bool:
        """Whether the encoder outputs the pooled features the image gate measures."""
        return ENCODER_FEATURES in self.graphs[ENCODER_GRAPH].outputs

    @property
    def locatable_findings(self) -> tuple[FindingSpec, ...]:
        """Findings with a box output, in the order of the encoder's ``boxes`` rows."""
        return tuple(f for f in self.findings if f.locatable)

    def referenced_files(self) -> list[str]:
        """Every file the manifest names (graphs, tokenizer, prompt, gate statistics, plans)."""
        names = [self.tokenizer.file]
        if self.prompt is not None:
            names.append(self.prompt.file)
        if self.gate.feature_stats is not None:
            names.append(self.gate.feature_stats)
        for graph in self.graphs.values():
            names.append(graph.onnx)
            if graph.torch:
                names.append(graph.torch)
        names.extend(plan.file for plan in self.tensorrt_plans)
        return names


def _parse_version(text: str) -> tuple[int, int]:
    parts = text.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"format_version must look like MAJOR.MINOR, got {text!r}")
    return int(parts[0]), int(parts[1])


def check_format_version(text: str, *, manifest_path: str = MANIFEST_NAME) -> None:
    """Refuse a format this runtime cannot read: other major, or a newer minor."""
    try:
        major, minor = _parse_version(text)
    except ValueError as exc:
        raise IncompatibleArtifactError(f"{manifest_path}: {exc}", path=manifest_path) from exc
    our_major, our_minor = _parse_version(FORMAT_VERSION)
    if major != our_major or minor > our_minor:
        raise IncompatibleArtifactError(
            f"{manifest_path}: artifact format {text} is not supported by this runtime "
            f"(reads {our_major}.0 to {FORMAT_VERSION}); re-export the engine with a matching "
            "training package or upgrade the runtime",
            path=manifest_path,
        )


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineArtifact:
    """A verified artifact on disk: where it is, what its manifest says, and who it is."""

    root: Path
    manifest: EngineManifest
    manifest_sha256: str

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def identity(self) -> EngineIdentity:
        """Name, version and manifest digest (which covers every file's digest)."""
        return EngineIdentity(
            name=self.manifest.name, version=self.manifest.version, sha256=self.manifest_sha256
        )


def _safe_relative(root: Path, relative: str, manifest_path: str) -> Path:
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root.resolve()):
        raise ManifestError(
            f"{manifest_path}: file {relative!r} points outside the artifact; the manifest is "
            "corrupt or tampered with, re-export the engine",
            path=relative,
        )
    return candidate


def _extract_archive(archive: Path, destination: Path | None) -> Path:
    target = Path(destination) if destination else Path(tempfile.mkdtemp(prefix="cxr-engine-"))
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            # The "data" filter refuses absolute paths, links out of the tree and devices.
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(
            f"{archive}: cannot unpack the engine archive ({exc}); copy it again", path=str(archive)
        ) from exc
    manifests = list(target.rglob(MANIFEST_NAME))
    if len(manifests) != 1:
        raise ManifestError(
            f"{archive}: the archive must hold exactly one {MANIFEST_NAME}, found {len(manifests)}",
            path=str(archive),
        )
    return manifests[0].parent


def read_manifest(root: Path) -> tuple[EngineManifest, str]:
    """Parse ``manifest.json`` (format version first, then schema); return it and its digest."""
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ManifestError(
            f"{manifest_path}: missing; {root} is not an engine artifact (export one with "
            "`training export`)",
            path=str(manifest_path),
        )
    raw = manifest_path.read_bytes()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(
            f"{manifest_path}: not valid JSON ({exc}); the file is corrupt, copy the "
            "artifact again",
            path=str(manifest_path),
        ) from exc
    if not isinstance(data, dict) or "format_version" not in data:
        raise ManifestError(
            f"{manifest_path}: no format_version; not an engine manifest", path=str(manifest_path)
        )
    check_format_version(str(data["format_version"]), manifest_path=str(manifest_path))
    try:
        manifest = EngineManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(
            f"{manifest_path}: does not follow the manifest schema: {exc}", path=str(manifest_path)
        ) from exc
    return manifest, hashlib.sha256(raw).hexdigest()


def load_artifact(
    path: str | Path, *, verify: bool = True, extract_to: str | Path | None = None
) -> EngineArtifact:
    """Open and verify an engine artifact directory or ``.tar``/``.tar.gz`` archive.

    Checks the format version, the manifest schema, that every referenced file is present and
    listed, and (``verify``) every file's SHA-256. Raises an
    :class:`~engine.exceptions.ArtifactError` subclass naming the file and the reason.
    """
    source = Path(path)
    if not source.exists():
        raise ArtifactNotFoundError(
            f"{source}: engine artifact not found; check the configured engine path",
            path=str(source),
        )
    if source.is_file():
        if not tarfile.is_tarfile(source):
            raise ArtifactError(
                f"{source}: neither an artifact directory nor a tar archive", path=str(source)
            )
        root = _extract_archive(source, Path(extract_to) if extract_to else None)
    else:
        root = source
    manifest, digest = read_manifest(root)
    listed = set(manifest.files)
    for relative in manifest.referenced_files():
        if relative not in listed:
            raise ManifestError(
                f"{root / MANIFEST_NAME}: {relative} is used but has no checksum in 'files'; "
                "re-export the engine",
                path=relative,
            )
    for relative, expected in sorted(manifest.files.items()):
        file_path = _safe_relative(root, relative, str(root / MANIFEST_NAME))
        if not file_path.is_file():
            raise ArtifactNotFoundError(
                f"{file_path}: listed in the manifest but missing; the artifact is incomplete, "
                "copy it again",
                path=relative,
            )
        if verify:
            actual = sha256_file(file_path)
            if actual != expected:
                raise ChecksumMismatchError(
                    f"{file_path}: SHA-256 {actual} differs from the manifest's {expected}; the "
                    "file is corrupt or was changed, copy the artifact again",
                    path=relative,
                )
    logger.info(
        "engine artifact %s %s loaded from %s (manifest sha256 %s)",
        manifest.name,
        manifest.version,
        root,
        digest[:12],
    )
    return EngineArtifact(root=root, manifest=manifest, manifest_sha256=digest)


def write_manifest(root: str | Path, manifest: EngineManifest) -> EngineArtifact:
    """Fill ``files`` with the SHA-256 of every file under ``root`` and write ``manifest.json``."""
    root_path = Path(root)
    files = {
        str(p.relative_to(root_path).as_posix()): sha256_file(p)
        for p in sorted(root_path.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }
    missing = [name for name in manifest.referenced_files() if name not in files]
    if missing:
        raise ArtifactNotFoundError(
            f"{root_path}: the manifest names files that were not written: {missing}",
            path=missing[0],
        )
    final = manifest.model_copy(update={"files": files})
    text = json.dumps(final.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
    (root_path / MANIFEST_NAME).write_text(text, encoding="utf-8")
    return EngineArtifact(
        root=root_path,
        manifest=final,
        manifest_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def pack_artifact(root: str | Path, archive: str | Path) -> Path:
    """Write an artifact directory as one ``.tar.gz`` (the single-file form)."""
    root_path, archive_path = Path(root), Path(archive)
    read_manifest(root_path)
    with tarfile.open(archive_path, "w:gz") as tar:
        tar.add(root_path, arcname=root_path.name)
    return archive_path


def copy_artifact(root: str | Path, destination: str | Path) -> Path:
    """Copy an artifact directory (used by tests that corrupt a copy)."""
    return Path(shutil.copytree(root, destination))


def utc_now() -> datetime:
    return datetime.now(UTC)
