"""The engine: studies (lists of pydicom datasets) in, :class:`~engine.result.StudyReport` out.

``create_engine(path, backend="onnxruntime")`` loads and verifies the artifact, creates the
backend (with fallback) and returns an :class:`Engine`. ``Engine.report_studies`` batches the
studies through the encoder and the decoder together; ``Engine.report_image_studies`` does the
same for PNG/JPEG files with their views given (dataset evaluation, ``python -m engine.predict``).
Findings come only from the model's probabilities (thresholds from the manifest) and the text
only from what the decoder produced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import numpy as np
from numpy.typing import NDArray

from engine.artifact import EngineArtifact, FindingSpec, load_artifact
from engine.backends import Backend, create_backend
from engine.decoding import (
    DecodingConfig,
    FindingPrompt,
    TokenRules,
    decoder_memory,
    generate,
)
from engine.exceptions import (
    ArtifactError,
    EngineOutputError,
    NotReportableError,
    NoUsableImageError,
    PixelDecodeError,
    StudyError,
)
from engine.gate import (
    GateDecision,
    ImageGate,
    check_study_headers,
    load_image_gate,
    refusal_summary,
)
from engine.labeler.labeler import NOT_ABNORMAL
from engine.preprocessing import (
    PreparedImage,
    prepare_dataset,
    prepare_image_file,
    stack_views,
)
from engine.result import (
    AnalysedImage,
    EngineIdentity,
    FindingResult,
    Presence,
    Region,
    StudyReport,
)
from engine.text import ReportTokenizer
from engine.views import select_view_files, select_views
from engine.writers import choose_text, laterality_from_region

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class ImageStudy:
    """A study given as image files (PNG/JPEG) with their views, e.g. one record of a dataset.

    ``images`` holds ``(path, view)`` pairs; ``view`` is ``"PA"``, ``"AP"``, ``"LATERAL"``,
    ``"LL"``, ``"RL"`` or ``None``/``"UNKNOWN"`` when the dataset does not say.
    """

    study_id: str
    images: tuple[tuple[Path, str | None], ...]

    def __post_init__(self) -> None:
        if not self.study_id:
            raise ValueError("ImageStudy.study_id must not be empty")


def select_image_views(study: ImageStudy) -> tuple[Path, Path | None, str]:
    """Frontal file, lateral file or None, and why (:func:`engine.views.select_view_files`:
    the dataset's views in place of View Position, pixels for unlabelled images). Raises
    :class:`NoUsableImageError` when no image is a usable frontal."""
    return select_view_files(study.images, study.study_id)


@dataclass(frozen=True)
class PreparedStudy:
    study_instance_uid: str
    images: NDArray[np.float32]  # [V, H, W]
    frontal: PreparedImage
    source_sop_instance_uids: tuple[str, ...]
    view_reason: str
    #: Which image fills each model input slot, with its view and why (written into reports).
    analysed: tuple[AnalysedImage, ...] = ()
    #: First value of the frontal image's Patient Orientation: "L" (the usual display, patient
    #: right on image left) or "R" (stored flipped); it decides the side of a located finding.
    row_direction: str = "L"


def reconcile_no_finding(findings: tuple[FindingResult, ...]) -> tuple[FindingResult, ...]:
    """"No finding" cannot be present beside a finding coded present (devices aside: they do
    not make a study abnormal). The heads are independent, so both can pass their thresholds;
    the named finding wins and "no finding" reads as uncertain, keeping its probability."""
    abnormal = any(
        f.presence == "present" and f.key not in NOT_ABNORMAL for f in findings
    )
    if not abnormal:
        return findings
    return tuple(
        replace(f, presence="uncertain")
        if f.key == "no_finding" and f.presence == "present"
        else f
        for f in findings
    )


def presence_of(probability: float, spec: FindingSpec) -> Presence:
    if probability >= spec.threshold_present:
        return "present"
    if probability <= spec.threshold_absent:
        return "absent"
    return "uncertain"


def _analysed(ds: Dataset, prepared: PreparedImage, reason: str) -> AnalysedImage:
    """What the report says about one image the model read (preprocessing reads frame 1)."""
    view = str(getattr(ds, "ViewPosition", "") or "").strip().upper()
    return AnalysedImage(prepared.sop_instance_uid, prepared.view, view, reason, frame_number=1)


class Engine:
    """A loaded artifact on one backend, with decoding settings."""

    def __init__(
        self,
        artifact: EngineArtifact,
        backend: Backend,
        decoding: DecodingConfig,
        *,
        max_batch: int = 8,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.artifact = artifact
        self.backend = backend
        self.decoding = decoding
        self.max_batch = max_batch
        self.tokenizer = ReportTokenizer(artifact)
        self.rules = TokenRules.from_spec(artifact.manifest.tokenizer)
        self.prompt = FindingPrompt(artifact) if artifact.manifest.prompt is not None else None
        self.image_gate: ImageGate | None
        self.image_gate, self.image_gate_status = load_image_gate(
            artifact.root, artifact.manifest.gate, has_features=artifact.manifest.has_image_features
        )
        if self.image_gate is None:
            logger.warning(
                "engine %s %s: image gate off, only the header gate applies: %s",
                artifact.manifest.name,
                artifact.manifest.version,
                self.image_gate_status,
            )
        else:
            logger.info("engine %s: image gate %s", artifact.manifest.name, self.image_gate_status)
        limit = artifact.manifest.decoder.max_positions - 1
        if decoding.max_length > limit:
            logger.warning(
                "max_length %d exceeds the decoder's %d positions; using %d",
                decoding.max_length,
                limit,
                limit,
            )
            self.decoding = replace(
                decoding, max_length=limit, min_length=min(decoding.min_length, limit)
            )

    @property
    def identity(self) -> EngineIdentity:
        return self.artifact.identity

    # -- preprocessing --------------------------------------------------------------------

    def prepare_study(self, datasets: Sequence[Dataset]) -> PreparedStudy:
        """Choose views and preprocess them; raises a :class:`StudyError` naming the study."""
        spec = self.artifact.manifest.input
        # The gate judges images only: other objects of the study (SRs, presentation states)
        # are no reason to refuse it, and a study without any image fails in select_views.
        images = [ds for ds in datasets if "PixelData" in ds or "FloatPixelData" in ds]
        accepted, decisions = check_study_headers(images, self.artifact.manifest.gate)
        if images and not accepted:
            study = str(getattr(images[0], "StudyInstanceUID", "") or "")
            raise NotReportableError(
                f"study {study}: {refusal_summary(decisions)}", study_instance_uid=study
            )
        selection = select_views(accepted or list(datasets))
        frontal_ds = selection.frontal
        study_uid = str(getattr(frontal_ds, "StudyInstanceUID", "") or "")
        if not study_uid:
            raise NoUsableImageError("the frontal image has no StudyInstanceUID")
        try:
            frontal = prepare_dataset(frontal_ds, spec, "frontal")
            lateral = None
            if "lateral" in spec.views and selection.lateral is not None:
                lateral = prepare_dataset(selection.lateral, spec, "lateral")
        except StudyError as exc:
            exc.study_instance_uid = exc.study_instance_uid or study_uid
            raise
        for warning in frontal.warnings:
            logger.warning("study %s: %s", study_uid, warning)
        sources = tuple(p.sop_instance_uid for p in (frontal, lateral) if p is not None)
        if not all(sources):
            raise NoUsableImageError(
                f"study {study_uid}: an image has no SOPInstanceUID; it cannot be referenced",
                study_instance_uid=study_uid,
            )
        analysed = [_analysed(frontal_ds, frontal, selection.frontal_reason)]
        if lateral is not None and selection.lateral is not None:
            analysed.append(_analysed(selection.lateral, lateral, selection.lateral_reason))
        orientation = getattr(frontal_ds, "PatientOrientation", None) or ["L"]
        return PreparedStudy(
            study_uid,
            stack_views(frontal, lateral, spec),
            frontal,
            sources,
            selection.frontal_reason,
            tuple(analysed),
            str(orientation[0]),
        )

    def prepare_image_study(self, study: ImageStudy) -> PreparedStudy:
        """Choose views by the dataset's labels and preprocess PNG/JPEG files; the file stems
        identify the images (regions, sources). Raises a :class:`StudyError` naming the study."""
        spec = self.artifact.manifest.input
        frontal_path, lateral_path, reason = select_image_views(study)
        try:
            frontal = prepare_image_file(frontal_path, spec, "frontal")
            lateral = None
            if "lateral" in spec.views and lateral_path is not None:
                lateral = prepare_image_file(lateral_path, spec, "lateral")
        except FileNotFoundError as exc:
            raise NoUsableImageError(
                f"study {study.study_id}: image file {exc.filename} not found; check the "
                "dataset's image folder",
                study_instance_uid=study.study_id,
            ) from exc
        except (OSError, ValueError) as exc:  # Pillow: UnidentifiedImageError, truncated data
            raise PixelDecodeError(
                f"study {study.study_id}: cannot read an image file ({exc}); replace the file "
                "or leave the study out",
                study_instance_uid=study.study_id,
            ) from exc
        sources = tuple(p.sop_instance_uid for p in (frontal, lateral) if p is not None)
        return PreparedStudy(
            study.study_id, stack_views(frontal, lateral, spec), frontal, sources, reason
        )

    # -- inference ------------------------------------------------------------------------

    def _findings(
        self, study: PreparedStudy, probs: NDArray[np.float32], boxes: NDArray[np.float32]
    ) -> tuple[FindingResult, ...]:
        results = []
        box_index = 0
        for index, spec in enumerate(self.artifact.manifest.findings):
            probability = float(np.clip(probs[index], 0.0, 1.0))
            presence = presence_of(probability, spec)
            region = None
            laterality = None
            if spec.locatable:
                box = boxes[box_index]
                box_index += 1
                if presence != "absent" and spec.report_region:
                    x0, y0, x1, y1 = study.frontal.letterbox.box_to_source(box)
                    # A box lying wholly in the letterbox padding collapses: report no region.
                    if x0 < x1 and y0 < y1:
                        region = Region(study.frontal.sop_instance_uid, x0, y0, x1, y1)
                        laterality = laterality_from_region(
                            region,
                            study.frontal.letterbox.source_width,
                            row_direction=study.row_direction,
                        )
            results.append(
                FindingResult(
                    spec.key,
                    spec.to_code(),
                    presence,
                    probability,
                    laterality=laterality,
                    region=region,
                )
            )
        return reconcile_no_finding(tuple(results))

    def prompt_states(self, probs: NDArray[np.float32]) -> NDArray[np.int64]:
        """The findings prompt of each study: the state its probabilities read as, with the
        same manifest thresholds that decide the reported findings."""
        assert self.prompt is not None
        index = {state: i for i, state in enumerate(self.prompt.states)}
        specs = self.artifact.manifest.findings
        states = np.zeros(probs.shape, dtype=np.int64)
        for row in range(probs.shape[0]):
            for col, spec in enumerate(specs):
                p = float(probs[row, col]) if np.isfinite(probs[row, col]) else 0.0
                states[row, col] = index[presence_of(float(np.clip(p, 0.0, 1.0)), spec)]
        return states

    def _image_gate_verdicts(
        self, features: NDArray[np.float32] | None, count: int
    ) -> list[tuple[str, str | None]]:
        """Per study: what the report records of the image gate, and why it refuses (or None)."""
        if self.image_gate is None:
            return [(f"off: {self.image_gate_status}", None)] * count
        if features is None:
            return [("off: the backend returned no image features", None)] * count
        return [
            (f"feature distance {distance:.2f} (at most {self.image_gate.max_distance:.2f})",
             reason)
            for distance, reason in self.image_gate.reasons(features)
        ]

    def _run_batch(self, studies: list[PreparedStudy]) -> list[StudyReport | StudyError]:
        images = np.stack([s.images for s in studies]).astype(np.float32)
        encoded = self.backend.encode(images)
        out: list[StudyReport | StudyError | None] = [None] * len(studies)
        good: list[int] = []
        gate = self._image_gate_verdicts(encoded.features, len(studies))
        for i, study in enumerate(studies):
            arrays = (encoded.probs[i], encoded.boxes[i], encoded.cross_keys[i])
            refusal = gate[i][1]
            if not all(np.all(np.isfinite(a)) for a in arrays):
                out[i] = EngineOutputError(
                    f"study {study.study_instance_uid}: the model produced NaN or infinite "
                    "values; the study is not reported (check the image and the engine)",
                    study_instance_uid=study.study_instance_uid,
                )
            elif refusal is not None:
                logger.info("gate refuses study %s: %s", study.study_instance_uid, refusal)
                decision = GateDecision(study.frontal.sop_instance_uid, (refusal,))
                out[i] = NotReportableError(
                    f"study {study.study_instance_uid}: {refusal_summary([decision])}",
                    study_instance_uid=study.study_instance_uid,
                )
            else:
                good.append(i)
        manifest = self.artifact.manifest
        # The structured writer never reads the decoder's text: it is not generated.
        token_ids: list[list[int]] | list[None] = [None] * len(good)
        if manifest.report_writer != "structured" and good:
            cross = decoder_memory(
                manifest.decoder.memory,
                encoded,
                good,
                self.prompt,
                self.prompt_states(encoded.probs) if self.prompt is not None else None,
            )
            token_ids = generate(
                self.backend.decode_step, self.backend.empty_cache, cross, self.decoding,
                self.rules
            )
        for i, ids in zip(good, token_ids, strict=True):
            study = studies[i]
            sections = self.tokenizer.sections(ids) if ids is not None else None
            if ids is not None and not sections:
                out[i] = EngineOutputError(
                    f"study {study.study_instance_uid}: the decoder produced no report text",
                    study_instance_uid=study.study_instance_uid,
                )
                continue
            findings = self._findings(study, encoded.probs[i], encoded.boxes[i])
            written = choose_text(
                manifest.report_writer,
                findings,
                sections,
                language=manifest.languages[0],
                bands={f.key: (f.threshold_absent, f.threshold_present) for f in manifest.findings},
            )
            out[i] = StudyReport(
                study_instance_uid=study.study_instance_uid,
                source_sop_instance_uids=study.source_sop_instance_uids,
                findings=findings,
                sections=written.sections,
                engine=self.identity,
                language=manifest.languages[0],
                extra={
                    "backend": self.backend.describe(),
                    "view_selection": study.view_reason,
                    "image_gate": gate[i][0],
                },
                analysed_images=study.analysed,
                writer=written.writer,
                writer_reason=written.reason,
            )
        return [r for r in out if r is not None]

    @overload
    def report_studies(self, studies: Sequence[Sequence[Dataset]]) -> list[StudyReport]: ...

    @overload
    def report_studies(
        self, studies: Sequence[Sequence[Dataset]], *, return_exceptions: bool
    ) -> list[StudyReport | StudyError]: ...

    def report_studies(
        self, studies: Sequence[Sequence[Dataset]], *, return_exceptions: bool = False
    ) -> list[StudyReport] | list[StudyReport | StudyError]:
        """One report per study, in order, batched ``max_batch`` studies at a time.

        A study that cannot be reported raises its :class:`StudyError`; with
        ``return_exceptions=True`` the error takes its place in the list and the others go on.
        """
        return self._report(studies, self.prepare_study, return_exceptions)

    @overload
    def report_image_studies(self, studies: Sequence[ImageStudy]) -> list[StudyReport]: ...

    @overload
    def report_image_studies(
        self, studies: Sequence[ImageStudy], *, return_exceptions: bool
    ) -> list[StudyReport | StudyError]: ...

    def report_image_studies(
        self, studies: Sequence[ImageStudy], *, return_exceptions: bool = False
    ) -> list[StudyReport] | list[StudyReport | StudyError]:
        """:meth:`report_studies` for studies given as image files (:class:`ImageStudy`); each
        report's ``study_instance_uid`` is the study id."""
        return self._report(studies, self.prepare_image_study, return_exceptions)

    def _report(
        self,
        studies: Sequence[_T],
        prepare: Callable[[_T], PreparedStudy],
        return_exceptions: bool,
    ) -> list[StudyReport | StudyError]:
        results: list[StudyReport | StudyError | None] = [None] * len(studies)
        prepared: list[tuple[int, PreparedStudy]] = []
        for index, study in enumerate(studies):
            try:
                prepared.append((index, prepare(study)))
            except StudyError as exc:
                if not return_exceptions:
                    raise
                logger.warning("study %s not reported: %s", exc.study_instance_uid, exc)
                results[index] = exc
        outcomes = self.infer([p for _, p in prepared])
        for (index, _), outcome in zip(prepared, outcomes, strict=True):
            if isinstance(outcome, StudyError) and not return_exceptions:
                raise outcome
            results[index] = outcome
        return [r for r in results if r is not None]

    def infer(self, prepared: Sequence[PreparedStudy]) -> list[StudyReport | StudyError]:
        """Model part only (encoder, decoding, mapping) on already prepared studies, batched
        ``max_batch`` at a time; a failed study's error takes its place in the list."""
        outcomes: list[StudyReport | StudyError] = []
        for start in range(0, len(prepared), self.max_batch):
            outcomes.extend(self._run_batch(list(prepared[start : start + self.max_batch])))
        return outcomes

    def report_study(self, datasets: Sequence[Dataset]) -> StudyReport:
        return self.report_studies([datasets])[0]


def create_engine(
    artifact_path: str | Path | EngineArtifact,
    backend: str = "onnxruntime",
    *,
    device: str | None = None,
    allow_test_artifact: bool = False,
    max_batch: int = 8,
    backend_options: dict[str, Any] | None = None,
    **decoding: Any,
) -> Engine:
    """Load an artifact and return a ready :class:`Engine`.

    ``decoding`` overrides the manifest's defaults (``num_beams``, ``max_length``, ...).
    Artifacts marked ``purpose="test"`` (random weights) are refused unless
    ``allow_test_artifact`` is set: they must never report on patients.
    """
    artifact = (
        artifact_path if isinstance(artifact_path, EngineArtifact) else load_artifact(artifact_path)
    )
    if artifact.manifest.purpose == "test" and not allow_test_artifact:
        raise ArtifactError(
            f"{artifact.root}: engine {artifact.manifest.name} is a test artifact with random "
            "weights; configure a trained engine (tests pass allow_test_artifact=True)",
            path=str(artifact.root),
        )
    config = DecodingConfig.from_defaults(artifact.manifest.decoding, **decoding)
    runner = create_backend(backend, artifact, device=device, **(backend_options or {}))
    logger.info(
        "engine %s %s ready on %s",
        artifact.manifest.name,
        artifact.manifest.version,
        runner.describe(),
    )
    return Engine(artifact, runner, config, max_batch=max_batch)
