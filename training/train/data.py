"""What a recipe trains on: labeled images, reports with their findings prompt, or pairs;
:func:`build_data` assembles a run's training and validation sets from the recipe.

Images go through the engine's own preprocessing (:func:`engine.preprocessing.prepare_image_file`
with the model's :class:`~engine.artifact.InputSpec`), so training sees exactly what the engine
will serve. Dataset boxes (fractions of the source image) are mapped onto the model grid with
the same letterbox. Splits are the adapters' patient-disjoint ones (NIH ChestX-ray14: the
official lists when present, else a SHA-256 hash of the patient id, 70/10/20; IU X-Ray: the
R2Gen split).

Batches are chosen by :class:`StepBatches` from the global step alone (a permutation seeded by
the run seed and the epoch), and each sample's augmentation by (seed, epoch, index): a resumed
run reads exactly the batches the uninterrupted run would have read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.artifact import PROMPT_STATES, InputSpec
from engine.exceptions import StudyError
from engine.preprocessing import Letterbox, prepare_image_file, stack_views
from training.data import create_dataset
from training.data.records import StudyRecord
from training.exceptions import TrainingError
from training.findings import FINDINGS, FINDINGS_BY_KEY
from training.train.augment import augment
from training.train.objectives import positive_weights
from training.train.recipe import AugmentSection, Recipe

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


def box_to_model(box: tuple[float, float, float, float], lb: Letterbox) -> tuple[float, ...]:
    """Source-image fractions -> model-grid fractions through the letterbox that prepared the
    image (the inverse of ``Letterbox.box_to_source``, which the engine serves with)."""
    from_source = getattr(lb, "box_from_source", None)  # issue 14's shared mapping
    if from_source is not None:
        return tuple(float(v) for v in from_source(box))
    x0, y0, x1, y1 = box
    return (
        (x0 * lb.source_width * lb.scale_x + lb.pad_x) / lb.target_width,
        (y0 * lb.source_height * lb.scale_y + lb.pad_y) / lb.target_height,
        (x1 * lb.source_width * lb.scale_x + lb.pad_x) / lb.target_width,
        (y1 * lb.source_height * lb.scale_y + lb.pad_y) / lb.target_height,
    )


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


class LabeledImages:
    """Images with finding labels (and boxes): the encoder's and heads' training data."""

    def __init__(
        self,
        records: Sequence[StudyRecord],
        keys: Sequence[str],
        spec: InputSpec,
        augment_config: AugmentSection | None,
        seed: int,
    ) -> None:
        self.records = list(records)
        self.keys = tuple(keys)
        self.locatable = tuple(k for k in self.keys if FINDINGS_BY_KEY[k].locatable)
        self.spec = spec
        self.augment_config = augment_config
        self.seed = seed
        self._cache: dict[int, _Prepared] = {}
        # Prepare every image once up front: the engine's refusals (unreadable, too small,
        # constant) leave the image out, counted, instead of failing a step later.
        kept, self.skipped = [], 0
        for record in records:
            self.records = [record]
            try:
                prepared = self._prepare(0)
            except (StudyError, OSError, ValueError) as exc:
                logger.warning("%s: image left out of training (%s)", record.study_id, exc)
                self.skipped += 1
                continue
            self._cache.pop(0)
            kept.append((record, prepared))
        self.records = [r for r, _ in kept]
        self._cache = {i: prepared for i, (_, prepared) in enumerate(kept)}
        if self.skipped:
            logger.warning("%d of %d images left out", self.skipped, len(records))
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

    def __len__(self) -> int:
        return len(self.records)

    def _prepare(self, index: int) -> _Prepared:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        record = self.records[index]
        frontal = prepare_image_file(record.images[0].path, self.spec, "frontal")
        pixels = stack_views(frontal, None, self.spec)
        boxes = np.zeros((len(self.locatable), 4), dtype=np.float32)
        box_mask = np.zeros(len(self.locatable), dtype=np.float32)
        lb = frontal.letterbox
        for box in record.boxes:
            if box.image_index != 0 or box.finding not in self.locatable:
                continue
            slot = self.locatable.index(box.finding)
            boxes[slot] = box_to_model((box.x_min, box.y_min, box.x_max, box.y_max), lb)
            box_mask[slot] = 1.0
        prepared = _Prepared(pixels, boxes, box_mask)
        self._cache[index] = prepared
        return prepared

    def item(self, index: int, epoch: int) -> dict[str, Any]:
        prepared = self._prepare(index)
        pixels, boxes, box_mask = prepared.pixels, prepared.boxes, prepared.box_mask.copy()
        if self.augment_config is not None and self.augment_config.enabled:
            rng = sample_rng(self.seed, epoch, index)
            planes = []
            for v in range(pixels.shape[0]):
                plane, moved = augment(
                    pixels[v], boxes if v == 0 else boxes[:0], self.spec, self.augment_config, rng
                )
                planes.append(plane)
                if v == 0:
                    boxes = moved
            pixels = np.stack(planes)
            collapsed = (boxes[:, 2] - boxes[:, 0] < 1e-3) | (boxes[:, 3] - boxes[:, 1] < 1e-3)
            box_mask[collapsed] = 0.0
        return {
            "images": torch.from_numpy(np.ascontiguousarray(pixels)),
            "labels": torch.from_numpy(self.labels[index]),
            "label_mask": torch.from_numpy(self.mask[index]),
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
            "box_mask": torch.from_numpy(box_mask),
        }

    def batch(self, pairs: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        items = [self.item(i, e) for i, e in pairs]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def report_target(record: StudyRecord, recipe: Recipe) -> str | None:
    """The text the decoder learns to write for one report, in the recipe's language."""
    english = record.report("en", tuple(recipe.text.sections))
    if recipe.text.language == "en":
        return english or None
    spanish = record.report("es", tuple(recipe.text.sections))
    if spanish:
        return spanish
    if not english:
        return None
    try:
        from training.bridge import spanish_target  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise TrainingError(
            'text.language = "es" needs Spanish targets: the English-to-Spanish bridge '
            f"(training.bridge.spanish_target) is not installed ({exc}); train with "
            'text.language = "en" or install the bridge'
        ) from exc
    result: str | None = spanish_target(english)
    return result


def report_findings(record: StudyRecord, recipe: Recipe) -> dict[str, str]:
    """The findings that make a training report's prompt."""
    if recipe.text.prompt_labels == "dataset" and record.findings:
        return dict(record.findings)
    from engine.labeler import get_labeler

    text = record.report("en", tuple(recipe.text.sections)) or record.report(
        "es", tuple(recipe.text.sections)
    )
    lang = "en" if record.report("en") else "es"
    return dict(get_labeler(lang).label(text, sections=False)) if text else {}


class Reports:
    """Reports as token ids with their findings prompt: the decoder's training data."""

    def __init__(
        self,
        records: Sequence[StudyRecord],
        recipe: Recipe,
        keys: Sequence[str],
        tokenizer: Any,
        texts: Sequence[str],
    ) -> None:
        from training.models.tokenizer import PAD, encode_report, token_id

        self.pad_id = token_id(tokenizer, PAD)
        self.max_tokens = recipe.text.max_tokens
        self.records = list(records)
        self.ids = [encode_report(tokenizer, text)[: self.max_tokens] for text in texts]
        found_all = [with_implied_no_finding(report_findings(r, recipe)) for r in self.records]
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
        return len(self.records)

    def batch(self, pairs: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        rows = [i for i, _ in pairs]
        longest = max(len(self.ids[i]) for i in rows)
        tokens = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        for r, i in enumerate(rows):
            tokens[r, : len(self.ids[i])] = torch.tensor(self.ids[i])
        return {
            "tokens": tokens,
            "states": self.states[rows],
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


def _texts(records: list[StudyRecord], recipe: Recipe) -> tuple[list[StudyRecord], list[str]]:
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


def input_spec(image_size: int, num_views: int) -> InputSpec:
    """The model's input spec as export writes it into the manifest, so training prepares
    images exactly as the engine will."""
    return InputSpec(
        height=image_size,
        width=image_size,
        views=("frontal", "lateral") if num_views == 2 else ("frontal",),
    )


def build_data(recipe: Recipe, spec: InputSpec, tokenizer_json: str | None) -> RunData:
    """Read the recipe's datasets and build the training and validation sets."""
    from tokenizers import Tokenizer

    from training.models.tokenizer import train_report_tokenizer

    d = recipe.data
    assert d.iu_root is not None  # the recipe validator requires it
    iu_kwargs = {"layout": d.iu_layout}
    datasets: list[str] = []
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
        datasets = [
            f"nih:train ({len(nih_train)} images)",
            f"iu_xray:train ({len(iu_train)} reports, {recipe.text.language})",
        ]
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
        else train_report_tokenizer(train_texts, vocab_size=recipe.text.vocab_size)
    )
    seed = recipe.run.seed
    train_reports = Reports(iu_train, recipe, keys, tokenizer, train_texts)
    val_reports = Reports(iu_val, recipe, keys, tokenizer, val_texts) if iu_val else None
    data = RunData(keys, spec, tokenizer, tuple(datasets))
    if recipe.path == "unpaired":
        data.train_images = LabeledImages(nih_train, keys, spec, recipe.augment, seed)
        data.val_images = LabeledImages(nih_val, keys, spec, None, seed) if nih_val else None
        data.train_reports, data.val_reports = train_reports, val_reports
        labels, mask = (
            torch.from_numpy(data.train_images.labels),
            torch.from_numpy(data.train_images.mask),
        )
    else:
        train_img = LabeledImages(iu_train, keys, spec, recipe.augment, seed)
        data.train_pairs = PairedStudies(train_img, train_reports)
        if iu_val and val_reports is not None:
            data.val_pairs = PairedStudies(
                LabeledImages(iu_val, keys, spec, None, seed), val_reports
            )
        labels = torch.where(
            torch.from_numpy(train_img.mask) > 0,
            torch.from_numpy(train_img.labels),
            train_reports.labels,
        )
        mask = torch.maximum(torch.from_numpy(train_img.mask), train_reports.label_mask)
    data.pos_weight = positive_weights(labels, mask, recipe.objectives.findings.max_pos_weight)
    return data
