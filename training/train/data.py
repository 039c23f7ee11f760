"""What a recipe trains on: labeled images, reports with their findings prompt, or pairs;
:func:`build_data` assembles a run's training and validation sets from the recipe.

Images go through the engine's own preprocessing with the model's
:class:`~engine.artifact.InputSpec`, so training sees what the engine will serve: validation
images exactly (:func:`engine.preprocessing.prepare_image_file`); training images decoded once
to the engine's [0, 1] display values, then per sample augmented and letterboxed
(:func:`engine.preprocessing.prepare_display`) at the spec's train-time aspect. Dataset boxes
(fractions of the source image) are mapped onto the model grid with each sample's own
letterbox. Splits are the adapters' patient-disjoint ones (NIH ChestX-ray14: the
official lists when present, else a SHA-256 hash of the patient id, 70/10/20; IU X-Ray: the
R2Gen split).

Batches are chosen by :class:`StepBatches` from the global step alone (a permutation seeded by
the run seed and the epoch), and each sample's aspect and augmentation by (seed, epoch,
index): a resumed run reads exactly the batches the uninterrupted run would have read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine.artifact import PROMPT_STATES, InputSpec
from engine.exceptions import StudyError
from engine.preprocessing import (
    MIN_SIDE,
    PreparedImage,
    image_file_to_display,
    prepare_display,
    sample_train_aspect,
    stack_views,
)
from engine.preprocessing.quality import check_size
from training.data import create_dataset
from training.data.images import record_views
from training.data.records import StudyRecord
from training.exceptions import TrainingError
from training.findings import FINDINGS, FINDINGS_BY_KEY
from training.train.augment import augment_display
from training.train.objectives import positive_weights
from training.train.recipe import AugmentSection, InputSection, Recipe

logger = logging.getLogger(__name__)

STATE_INDEX = {state: i for i, state in enumerate(PROMPT_STATES)}


def model_finding_keys(recipe: Recipe, labels: Sequence[dict[str, str]]) -> tuple[str, ...]:
    """The findings the model scores, in the project's finding order: the recipe's list, or
    every finding the training labels speak of (a head with no labels would only invent)."""
    if recipe.data.findings:
        unknown = [k for k in recipe.data.findings if k not in FINDINGS_BY_KEY]
        if unknown:
            raise TrainingError(f"data.findings: unknown finding keys {unknown}")
        wanted = set(recipe.data.findings)
    else:
        wanted = {key for found in labels for key in found}
    keys = tuple(f.key for f in FINDINGS if f.key in wanted)
    if not keys:
        raise TrainingError("no finding has a label in the training images; check data paths")
    return keys


def with_implied_no_finding(findings: Mapping[str, str]) -> dict[str, str]:
    """``findings`` with "no finding" absent when another finding is present and the source
    left it out (NIH lists "No Finding" only on normal images): otherwise the head would see
    only positives for it and call every study normal."""
    out = dict(findings)
    if "no_finding" not in out and any(v == "present" for k, v in out.items() if k != "no_finding"):
        out["no_finding"] = "absent"
    return out


def prompt_states(findings: dict[str, str], keys: Sequence[str]) -> list[int]:
    """A report's findings prompt: present/uncertain/absent per finding; a finding the
    report does not mention reads as absent (a report names what it sees)."""
    return [STATE_INDEX.get(findings.get(key, "absent"), STATE_INDEX["absent"]) for key in keys]


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


class StepBatches:
    """The indices of global step ``s``: batch ``s mod per_epoch`` of epoch ``s div
    per_epoch``'s permutation (seeded by ``seed`` and the epoch); the last partial batch of
    an epoch is dropped. With ``world`` processes each rank takes its slice of the batch."""

    def __init__(self, size: int, batch_size: int, seed: int, *, rank: int = 0, world: int = 1):
        if size < batch_size:
            raise TrainingError(
                f"{size} samples cannot fill one batch of {batch_size}; lower the batch size "
                "or add data"
            )
        if batch_size % world:
            raise TrainingError(f"batch size {batch_size} must divide by {world} processes")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world = rank, world
        self.per_epoch = size // batch_size
        self._cache: tuple[int, list[int]] | None = None

    def epoch_of(self, step: int) -> int:
        return step // self.per_epoch

    def __call__(self, step: int) -> list[tuple[int, int]]:
        """``(index, epoch)`` pairs of this rank's share of step ``step``."""
        epoch, within = divmod(step, self.per_epoch)
        if self._cache is None or self._cache[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cache = (epoch, torch.randperm(self.size, generator=generator).tolist())
        order = self._cache[1]
        batch = order[within * self.batch_size : (within + 1) * self.batch_size]
        share = self.batch_size // self.world
        return [(i, epoch) for i in batch[self.rank * share : (self.rank + 1) * share]]


@dataclass
class _Prepared:
    pixels: np.ndarray
    boxes: np.ndarray  # [L, 4] model-grid fractions
    box_mask: np.ndarray  # [L]


def cached_display(display: np.ndarray, longest: int) -> np.ndarray:
    """``display`` shrunk so that its longest side is at most ``longest`` (no side below the
    engine's :data:`~engine.preprocessing.MIN_SIDE`), kept as float16 (about 5e-4 of the [0, 1]
    range): what a training run holds in memory per image. Box fractions are unchanged."""
    h, w = display.shape
    factor = min(1.0, max(longest / max(h, w), MIN_SIDE / min(h, w)))
    if factor < 1.0:
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        display = np.asarray(
            Image.fromarray(display.astype(np.float32), mode="F").resize(
                size, Image.Resampling.BILINEAR
            )
        )
    return np.clip(display, 0.0, 1.0).astype(np.float16)


class LabeledImages:
    """Images with finding labels (and boxes): the encoder's and heads' training data.

    The frontal (and, for a two-view model, the lateral) image of each study is chosen by the
    node's rule (:func:`training.data.images.record_views`). ``train``: each decoded display
    image is kept once (:func:`cached_display`) and every sample is augmented and letterboxed
    from it, at the train-time aspect the input spec asks for
    (:func:`~engine.preprocessing.sample_train_aspect`), the box targets mapped through that
    sample's own letterbox. Otherwise (validation) each image is prepared once exactly as the
    engine serves it (what :func:`~engine.preprocessing.prepare_image_file` gives).
    """

    def __init__(
        self,
        records: Sequence[StudyRecord],
        keys: Sequence[str],
        spec: InputSpec,
        augment_config: AugmentSection | None,
        seed: int,
        *,
        train: bool = False,
        cache_side: int = 0,
    ) -> None:
        self.keys = tuple(keys)
        self.locatable = tuple(k for k in self.keys if FINDINGS_BY_KEY[k].locatable)
        self.spec = spec
        self.augment_config = augment_config
        self.seed = seed
        self.train = train
        self.cache_side = cache_side or 2 * max(spec.height, spec.width)
        # Every image is read once up front: the engine's refusals (no usable frontal,
        # unreadable, too small, constant) leave the study out, counted, instead of failing a
        # step later.
        self._frontal_index: list[int] = []
        self._displays: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._prepared: list[_Prepared] = []
        self.records: list[StudyRecord] = []
        self.skipped = 0
        for record in records:
            try:
                self._load(record)
            except (StudyError, OSError, ValueError) as exc:
                logger.warning("%s: study left out of training (%s)", record.study_id, exc)
                self.skipped += 1
                continue
            self.records.append(record)
        if self.skipped:
            logger.warning("%d of %d studies left out", self.skipped, len(records))
        labels = np.zeros((len(self.records), len(self.keys)), dtype=np.float32)
        mask = np.zeros_like(labels)
        for row, record in enumerate(self.records):
            found = with_implied_no_finding(record.findings)
            for col, key in enumerate(self.keys):
                presence = found.get(key)
                if presence in ("present", "absent"):  # uncertain and unspoken: no label
                    labels[row, col] = presence == "present"
                    mask[row, col] = 1.0
        self.labels, self.mask = labels, mask
        #: Boxes per locatable finding on the studies' frontal images: how much the box head
        #: is taught where each finding lies (export reports no region below a minimum).
        self.box_counts = {key: 0 for key in self.locatable}
        for row, record in enumerate(self.records):
            for box in record.boxes:
                if box.finding in self.box_counts and box.image_index == self._frontal_index[row]:
                    self.box_counts[box.finding] += 1

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, record: StudyRecord) -> None:
        frontal_index, lateral_index, _ = record_views(record)
        front = record.images[frontal_index]
        display = image_file_to_display(front.path, bits_stored=front.bits_stored)
        source = Path(front.path).stem
        side = self._lateral(record, lateral_index if "lateral" in self.spec.views else None)
        if self.train:
            prepare_display(display, self.spec, "frontal", source=source)  # the refusals
            self._displays.append(
                (
                    cached_display(display, self.cache_side),
                    None if side is None else cached_display(side, self.cache_side),
                )
            )
        else:
            frontal = prepare_display(display, self.spec, "frontal", source=source)
            lateral = None if side is None else prepare_display(side, self.spec, "lateral")
            self._prepared.append(self._targets(record, frontal_index, frontal, lateral))
        self._frontal_index.append(frontal_index)

    def _lateral(self, record: StudyRecord, index: int | None) -> np.ndarray | None:
        """The lateral's display image, or None when there is none or the engine refuses it
        (the slot is then filled as ``spec.missing_lateral`` says, as the node does)."""
        if index is None:
            return None
        ref = record.images[index]
        try:
            display = image_file_to_display(ref.path, bits_stored=ref.bits_stored)
            check_size(display.shape[0], display.shape[1], Path(ref.path).stem)
        except (StudyError, OSError, ValueError) as exc:
            logger.info("%s: lateral image not used (%s)", record.study_id, exc)
            return None
        return display

    def _source_boxes(
        self, record: StudyRecord, frontal_index: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The record's frontal boxes as ``[L, 4]`` source fractions, one slot per locatable
        finding, and which slots hold a box."""
        boxes = np.zeros((len(self.locatable), 4), dtype=np.float32)
        box_mask = np.zeros(len(self.locatable), dtype=np.float32)
        for box in record.boxes:
            if box.image_index != frontal_index or box.finding not in self.locatable:
                continue
            slot = self.locatable.index(box.finding)
            boxes[slot] = (box.x_min, box.y_min, box.x_max, box.y_max)
            box_mask[slot] = 1.0
        return boxes, box_mask

    def _targets(
        self,
        record: StudyRecord,
        frontal_index: int,
        frontal: PreparedImage,
        lateral: PreparedImage | None,
        boxes: np.ndarray | None = None,
        box_mask: np.ndarray | None = None,
    ) -> _Prepared:
        if boxes is None or box_mask is None:
            boxes, box_mask = self._source_boxes(record, frontal_index)
        lb = frontal.letterbox
        grid = np.zeros_like(boxes)
        for slot in np.flatnonzero(box_mask):
            grid[slot] = lb.box_from_source(tuple(float(v) for v in boxes[slot]))
        return _Prepared(stack_views(frontal, lateral, self.spec), grid, box_mask)

    def _view_sample(
        self, display: np.ndarray, boxes: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, float | None]:
        aspect = sample_train_aspect(self.spec, rng)
        values = display.astype(np.float32)
        if self.augment_config is not None and self.augment_config.enabled:
            values, boxes = augment_display(values, boxes, self.augment_config, rng)
        return values, boxes, aspect

    def _sample(self, index: int, epoch: int) -> _Prepared:
        """One training sample of study ``index`` in ``epoch``: its draws come from
        (seed, epoch, index) only, in a fixed order (frontal aspect and augmentation, then the
        lateral's)."""
        record = self.records[index]
        frontal_index = self._frontal_index[index]
        rng = sample_rng(self.seed, epoch, index)
        front, side = self._displays[index]
        boxes, box_mask = self._source_boxes(record, frontal_index)
        values, boxes, aspect = self._view_sample(front, boxes, rng)
        collapsed = (boxes[:, 2] - boxes[:, 0] < 1e-3) | (boxes[:, 3] - boxes[:, 1] < 1e-3)
        box_mask = np.where(collapsed, 0.0, box_mask).astype(np.float32)
        frontal = prepare_display(
            values, self.spec, "frontal", source=record.study_id, train_aspect=aspect
        )
        lateral = None
        if side is not None:
            side_values, _, side_aspect = self._view_sample(side, boxes[:0], rng)
            lateral = prepare_display(
                side_values, self.spec, "lateral", source=record.study_id, train_aspect=side_aspect
            )
        return self._targets(record, frontal_index, frontal, lateral, boxes, box_mask)

    def item(self, index: int, epoch: int) -> dict[str, Any]:
        prepared = self._sample(index, epoch) if self.train else self._prepared[index]
        return {
            "images": torch.from_numpy(np.ascontiguousarray(prepared.pixels)),
            "labels": torch.from_numpy(self.labels[index]),
            "label_mask": torch.from_numpy(self.mask[index]),
            "boxes": torch.from_numpy(np.ascontiguousarray(prepared.boxes, dtype=np.float32)),
            "box_mask": torch.from_numpy(prepared.box_mask.copy()),
        }

    def batch(self, pairs: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        items = [self.item(i, e) for i, e in pairs]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


@dataclass(frozen=True)
class ReportTarget:
    """The text the decoder learns to write for one report, section by section (either may be
    empty). It is encoded ``[BOS] [HALLAZGOS] findings [IMPRESION] impression [EOS]``
    (:func:`training.models.tokenizer.encode_report`, a section's token only when it has
    text); the manifest names the section tokens and the runtime splits the decoded text at
    them into "Hallazgos" and "Impresión" (:meth:`engine.text.ReportTokenizer.sections`)."""

    findings: str = ""
    impression: str = ""

    def __bool__(self) -> bool:
        return bool(self.findings or self.impression)

    @property
    def text(self) -> str:
        """Both sections as one text (the tokenizer's training corpus)."""
        return " ".join(t for t in (self.findings, self.impression) if t)


def _record_sections(record: StudyRecord, lang: str, wanted: Sequence[str]) -> dict[str, str]:
    sections = record.sections.get(lang, {})
    return {name: sections[name].strip() for name in wanted if sections.get(name, "").strip()}


def report_target(record: StudyRecord, recipe: Recipe) -> ReportTarget | None:
    """The target of one report in the recipe's language and sections, or None without text.

    Spanish targets come from the record's Spanish sections, else from its English ones
    through the English-to-Spanish bridge, one section at a time so each keeps its place."""
    wanted = tuple(recipe.text.sections)
    english = _record_sections(record, "en", wanted)
    chosen = english
    if recipe.text.language == "es":
        chosen = _record_sections(record, "es", wanted)
        if not chosen and english:
            try:
                from training.bridge import spanish_target  # type: ignore[import-not-found,unused-ignore]
            except ImportError as exc:
                raise TrainingError(
                    'text.language = "es" needs Spanish targets: the English-to-Spanish bridge '
                    f"(training.bridge.spanish_target) is not installed ({exc}); train with "
                    'text.language = "en" or install the bridge'
                ) from exc
            bridged = {name: spanish_target(text) for name, text in english.items()}
            chosen = {name: text for name, text in bridged.items() if text}
    target = ReportTarget(chosen.get("findings", ""), chosen.get("impression", ""))
    return target or None


def report_findings(
    record: StudyRecord, recipe: Recipe, target: ReportTarget | None = None
) -> dict[str, str]:
    """The findings that make a training report's prompt."""
    if recipe.text.prompt_labels == "dataset" and record.findings:
        return dict(record.findings)
    from engine.labeler import get_labeler

    if recipe.text.prompt_labels == "target" and target is not None:
        return dict(get_labeler(recipe.text.language).label(target.text, sections=False))

    text = record.report("en", tuple(recipe.text.sections)) or record.report(
        "es", tuple(recipe.text.sections)
    )
    lang = "en" if record.report("en") else "es"
    return dict(get_labeler(lang).label(text, sections=False)) if text else {}


class Reports:
    """Reports as token ids with their findings prompt: the decoder's training data.

    ``train``: each report whose prompt has a present finding is repeated
    ``data.oversample_findings`` times (:attr:`rows` maps a sample index to its report), and
    each prompt state is replaced by a random one with probability ``text.prompt_noise``,
    drawn from (seed, epoch, sample) like the image augmentation."""

    def __init__(
        self,
        records: Sequence[StudyRecord],
        recipe: Recipe,
        keys: Sequence[str],
        tokenizer: Any,
        texts: Sequence[ReportTarget],
        *,
        train: bool = False,
    ) -> None:
        from training.models.tokenizer import PAD, encode_report, token_id

        self.pad_id = token_id(tokenizer, PAD)
        self.max_tokens = recipe.text.max_tokens
        self.records = list(records)
        self.ids = [
            encode_report(tokenizer, t.findings, t.impression)[: self.max_tokens] for t in texts
        ]
        found_all = [
            with_implied_no_finding(report_findings(r, recipe, t))
            for r, t in zip(self.records, texts, strict=True)
        ]
        self.seed = recipe.run.seed
        self.prompt_noise = recipe.text.prompt_noise if train else 0.0
        repeat = recipe.data.oversample_findings if train else 1
        self.rows = [
            row
            for row, found in enumerate(found_all)
            for _ in range(
                repeat
                if any(found.get(k) == "present" for k in keys if k != "no_finding")
                else 1
            )
        ]
        self.states = torch.tensor(
            [prompt_states(found, keys) for found in found_all], dtype=torch.long
        ).reshape(len(self.records), len(keys))
        self.labels = torch.zeros(self.states.shape)
        self.label_mask = torch.zeros(self.states.shape)
        for row, found in enumerate(found_all):
            for col, key in enumerate(keys):
                if found.get(key) in ("present", "absent"):
                    self.labels[row, col] = float(found[key] == "present")
                    self.label_mask[row, col] = 1.0

    def __len__(self) -> int:
        """Samples per epoch (reports with findings counted as often as they are repeated)."""
        return len(self.rows)

    def _states(self, pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
        states = self.states[[self.rows[i] for i, _ in pairs]].clone()
        if self.prompt_noise > 0:
            for r, (i, epoch) in enumerate(pairs):
                rng = sample_rng(self.seed, epoch, i)
                flip = rng.random(states.shape[1]) < self.prompt_noise
                drawn = rng.integers(0, len(PROMPT_STATES), states.shape[1])
                states[r] = torch.where(
                    torch.from_numpy(flip), torch.from_numpy(drawn), states[r]
                )
        return states

    def batch(self, pairs: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        rows = [self.rows[i] for i, _ in pairs]
        longest = max(len(self.ids[i]) for i in rows)
        tokens = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        for r, i in enumerate(rows):
            tokens[r, : len(self.ids[i])] = torch.tensor(self.ids[i])
        return {
            "tokens": tokens,
            "states": self._states(pairs),
            "report_labels": self.labels[rows],
            "report_label_mask": self.label_mask[rows],
        }


class PairedStudies:
    """Images with their own report (IU X-Ray with images, MIMIC-CXR-JPG...)."""

    def __init__(self, images: LabeledImages, reports: Reports) -> None:
        if len(images) != len(reports):
            raise TrainingError("paired images and reports differ in number")
        self.images, self.reports = images, reports

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, pairs: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        out = self.images.batch(pairs)
        out.update(self.reports.batch(pairs))
        # Labels of the findings head come from the report when the images carry none.
        out["labels"] = torch.where(out["label_mask"] > 0, out["labels"], out["report_labels"])
        out["label_mask"] = torch.maximum(out["label_mask"], out["report_label_mask"])
        return out


def limit(records: list[StudyRecord], count: int) -> list[StudyRecord]:
    """The first ``count`` records in study-id order (deterministic; 0 keeps all)."""
    ordered = sorted(records, key=lambda r: r.study_id)
    return ordered[:count] if count else ordered


def has_image(record: StudyRecord) -> bool:
    return bool(record.images) and Path(record.images[0].path).is_file()


# -- a run's data ----------------------------------------------------------------------------


@dataclass
class RunData:
    keys: tuple[str, ...]
    spec: InputSpec
    tokenizer: Any
    datasets: tuple[str, ...]
    train_images: LabeledImages | None = None
    val_images: LabeledImages | None = None
    train_reports: Reports | None = None
    val_reports: Reports | None = None
    train_pairs: PairedStudies | None = None
    val_pairs: PairedStudies | None = None
    pos_weight: torch.Tensor | None = None


def _records(name: str, root: Path, split: str, **kwargs: Any) -> list[StudyRecord]:
    return list(create_dataset(name, root, split=split, **kwargs))


def _texts(
    records: list[StudyRecord], recipe: Recipe
) -> tuple[list[StudyRecord], list[ReportTarget]]:
    kept, texts = [], []
    for record in records:
        text = report_target(record, recipe)
        if text:
            kept.append(record)
            texts.append(text)
    if len(kept) < len(records):
        logger.info(
            "%d of %d reports have no %s target text; left out",
            len(records) - len(kept),
            len(records),
            recipe.text.language,
        )
    return kept, texts


def _with_images(
    images: LabeledImages, records: list[StudyRecord], texts: list[ReportTarget]
) -> tuple[list[StudyRecord], list[ReportTarget]]:
    """The reports of the studies whose images were kept (a refused image leaves its study
    out of the paired data, report included)."""
    kept = {record.study_id for record in images.records}
    pairs = [(r, t) for r, t in zip(records, texts, strict=True) if r.study_id in kept]
    return [r for r, _ in pairs], [t for _, t in pairs]


def input_spec(image_size: int, num_views: int, letterbox: InputSection | None = None) -> InputSpec:
    """The model's input spec as export writes it into the manifest (with the recipe's
    train-time letterbox), so training prepares images exactly as the engine will."""
    letterbox = letterbox or InputSection()
    return InputSpec(
        height=image_size,
        width=image_size,
        views=("frontal", "lateral") if num_views == 2 else ("frontal",),
        train_letterbox=letterbox.train_letterbox,
        train_letterbox_p=letterbox.train_letterbox_p,
        train_aspect_range=letterbox.train_aspect_range,
    )


def build_data(recipe: Recipe, spec: InputSpec, tokenizer_json: str | None) -> RunData:
    """Read the recipe's datasets and build the training and validation sets."""
    from tokenizers import Tokenizer

    from training.models.tokenizer import train_report_tokenizer

    d = recipe.data
    assert d.iu_root is not None  # the recipe validator requires it
    iu_kwargs = {"layout": d.iu_layout}
    datasets: list[str] = []
    nih_train: list[StudyRecord] = []
    nih_val: list[StudyRecord] = []
    if recipe.path in ("unpaired", "text"):
        if recipe.path == "unpaired":
            assert d.nih_root is not None
            nih_train = limit(_records("nih", d.nih_root, "train"), d.max_train_images)
            nih_val = limit(_records("nih", d.nih_root, "val"), d.max_val_images)
        keys = model_finding_keys(recipe, [dict(r.findings) for r in nih_train])
        iu_train, train_texts = _texts(
            limit(_records("iu_xray", d.iu_root, "train", **iu_kwargs), d.max_train_reports),
            recipe,
        )
        iu_val, val_texts = _texts(
            limit(_records("iu_xray", d.iu_root, "val", **iu_kwargs), d.max_val_reports), recipe
        )
        datasets = [f"iu_xray:train ({len(iu_train)} reports, {recipe.text.language})"]
        if recipe.path == "unpaired":
            datasets.insert(0, f"nih:train ({len(nih_train)} images)")
    else:
        all_train = [
            r for r in _records("iu_xray", d.iu_root, "train", **iu_kwargs) if has_image(r)
        ]
        all_val = [r for r in _records("iu_xray", d.iu_root, "val", **iu_kwargs) if has_image(r)]
        iu_train, train_texts = _texts(limit(all_train, d.max_train_images), recipe)
        iu_val, val_texts = _texts(limit(all_val, d.max_val_images), recipe)
        if not iu_train:
            raise TrainingError(
                f"{d.iu_root}: no training study has both an image on disk and a report; the "
                "paired path needs the images (R2Gen layout: images/<id>/<n>.png)"
            )
        keys = model_finding_keys(
            recipe, [dict(r.findings) or report_findings(r, recipe) for r in iu_train]
        )
        datasets = [f"iu_xray:train ({len(iu_train)} studies with images, {recipe.text.language})"]
    if not train_texts:
        raise TrainingError("no training report has target text; check data.iu_root")
    tokenizer = (
        Tokenizer.from_str(tokenizer_json)
        if tokenizer_json
        else train_report_tokenizer(
            [t.text for t in train_texts], vocab_size=recipe.text.vocab_size
        )
    )
    seed = recipe.run.seed
    data = RunData(keys, spec, tokenizer, tuple(datasets))
    if recipe.path in ("unpaired", "text"):
        data.train_reports = Reports(iu_train, recipe, keys, tokenizer, train_texts, train=True)
        if iu_val:
            data.val_reports = Reports(iu_val, recipe, keys, tokenizer, val_texts)
        if recipe.path == "text":
            return data  # no images: no image sets, no findings-head weights
        data.train_images = LabeledImages(
            nih_train, keys, spec, recipe.augment, seed, train=True, cache_side=d.image_cache_side
        )
        data.val_images = LabeledImages(nih_val, keys, spec, None, seed) if nih_val else None
        labels, mask = (
            torch.from_numpy(data.train_images.labels),
            torch.from_numpy(data.train_images.mask),
        )
    else:
        train_img = LabeledImages(
            iu_train, keys, spec, recipe.augment, seed, train=True, cache_side=d.image_cache_side
        )
        train_records, kept_texts = _with_images(train_img, iu_train, train_texts)
        train_reports = Reports(train_records, recipe, keys, tokenizer, kept_texts)
        data.train_pairs = PairedStudies(train_img, train_reports)
        if iu_val:
            val_img = LabeledImages(iu_val, keys, spec, None, seed)
            if len(val_img):
                val_records, kept_texts = _with_images(val_img, iu_val, val_texts)
                data.val_pairs = PairedStudies(
                    val_img, Reports(val_records, recipe, keys, tokenizer, kept_texts)
                )
        labels = torch.where(
            torch.from_numpy(train_img.mask) > 0,
            torch.from_numpy(train_img.labels),
            train_reports.labels,
        )
        mask = torch.maximum(torch.from_numpy(train_img.mask), train_reports.label_mask)
    data.pos_weight = positive_weights(labels, mask, recipe.objectives.findings.max_pos_weight)
    return data
