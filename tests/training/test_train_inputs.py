"""What the training loop feeds the model: images through the engine's pipeline with the
train-time letterbox and augmentation before it (issue 14's API), box targets through each
sample's own letterbox, and report targets that keep their sections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.artifact import InputSpec
from engine.preprocessing import (
    Letterbox,
    image_file_to_display,
    prepare_display,
    prepare_image_file,
    sample_train_aspect,
)
from training.data import create_dataset
from training.data.records import Box, ImageRef, StudyRecord
from training.train.augment import augment_display
from training.train.data import (
    LabeledImages,
    ReportTarget,
    cached_display,
    report_target,
    sample_rng,
)
from training.train.recipe import AugmentSection, Recipe

SPEC = InputSpec(height=64, width=64, train_letterbox="random-aspect", train_letterbox_p=1.0)
PAD = (SPEC.pad_value - SPEC.mean) / SPEC.std
STILL = AugmentSection(rotate_degrees=0, scale=(1, 1), translate=0, contrast=0, brightness=0,
                       gamma=(1, 1))


def nih_records(shared_data: Path, count: int) -> list[StudyRecord]:
    records = [r for r in create_dataset("nih", shared_data / "nih", split="train") if r.boxes]
    return sorted(records, key=lambda r: r.study_id)[:count]


def synthetic_record(tmp_path: Path) -> StudyRecord:
    """A portrait radiograph-like PNG (textured grey) with a bright square on the image's left
    (the patient's right) and a box on it."""
    rng = np.random.default_rng(0)
    h, w = 300, 240
    img = 60 + 40 * np.linspace(0, 1, w)[None, :] + rng.normal(0, 8, (h, w))
    img[90:150, 30:90] = 255
    path = tmp_path / "synthetic.png"
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    box = Box("nodule", 0, 30 / w, 90 / h, 90 / w, 150 / h)
    return StudyRecord("synthetic", "s1", (ImageRef(path, "PA"),), {}, {"nodule": "present"},
                       "train", (box,))


def test_training_samples_get_the_train_time_letterbox_from_seed_and_step(
    shared_data: Path,
) -> None:
    records = nih_records(shared_data, 3)
    data = LabeledImages(records, ("pneumonia", "atelectasis"), SPEC, STILL, seed=7, train=True)
    assert len(data) == len(records)
    widths = set()
    for index in range(len(data)):
        for epoch in range(3):
            item = data.item(index, epoch)
            again = data.item(index, epoch)
            assert np.array_equal(item["images"].numpy(), again["images"].numpy())
            # The aspect comes from (seed, epoch, index): the bars are where it puts them.
            aspect = sample_train_aspect(SPEC, sample_rng(7, epoch, index))
            assert aspect is not None and 0.8 <= aspect <= 1.0
            path = records[index].images[0].path
            h, w = cached_display(image_file_to_display(path), data.cache_side).shape
            lb = Letterbox.fit(w, h, 64, 64, placed_aspect=aspect)
            pad = int(lb.pad_x)
            widths.add(lb.resized_size[0])
            plane = item["images"][0].numpy()
            if pad:
                assert np.all(plane[:, :pad] == PAD)
                assert np.all(plane[:, pad + lb.resized_size[0] :] == PAD)
            # Box targets go through the same letterbox: inside the placed image.
            for slot in np.flatnonzero(item["box_mask"].numpy()):
                x0, y0, x1, y1 = item["boxes"][slot].tolist()
                assert pad / 64 - 1e-6 <= x0 < x1 <= (pad + lb.resized_size[0]) / 64 + 1e-6
                src = next(b for b in records[index].boxes
                           if data.locatable[slot] == b.finding)
                want = lb.box_from_source((src.x_min, src.y_min, src.x_max, src.y_max))
                assert (x0, y0, x1, y1) == pytest.approx(want, abs=1e-6)
    assert len(widths) > 1  # the aspect varies from sample to sample
    # Validation images are placed exactly as the node places them.
    val = LabeledImages(records, ("pneumonia",), SPEC, None, seed=7)
    served = prepare_image_file(records[0].images[0].path, SPEC, "frontal")
    assert np.array_equal(val.item(0, 5)["images"][0].numpy(), served.pixels)


def test_augmented_boxes_follow_the_image_and_the_bars_stay_straight(tmp_path: Path) -> None:
    record = synthetic_record(tmp_path)
    spec = SPEC.model_copy(update={"train_letterbox_p": 0.5})
    data = LabeledImages([record], ("nodule",), spec, AugmentSection(rotate_degrees=10),
                         seed=3, train=True)
    for epoch in range(12):
        item = data.item(0, epoch)
        plane = item["images"][0].numpy()
        assert item["box_mask"][0] == 1.0
        x0, y0, x1, y1 = (item["boxes"][0].numpy() * 64).tolist()
        inside = plane[int(y0) + 2 : int(y1) - 1, int(x0) + 2 : int(x1) - 1]
        assert inside.size and (inside > 1.0).mean() > 0.8, epoch  # the box is on the square
        bright = np.argwhere(plane > 1.5)
        assert bright[:, 1].mean() < 32  # never flipped to the other side
        # The letterbox comes after the rotation: whole pad columns, no tilted bars.
        cols = np.flatnonzero(np.all(plane == PAD, axis=0))
        image_cols = np.setdiff1d(np.arange(64), cols)
        assert np.all(np.diff(image_cols) == 1)  # one contiguous image band between the bars


def test_two_view_studies_use_the_node_view_choice(shared_data: Path) -> None:
    """An unlabelled lateral listed first: the frontal slot gets the frontal (and its boxes),
    the lateral slot the lateral, in training as in validation."""
    frontal = shared_data / "nih" / "images_512" / "00000193_019.jpg"
    lateral = shared_data / "lateral_chest" / "images" / "000017-1.jpg"
    box = Box("nodule", 1, 0.2, 0.3, 0.4, 0.5)
    record = StudyRecord("t", "s2", (ImageRef(lateral), ImageRef(frontal)), {},
                         {"nodule": "present"}, "train", (box,))
    spec = InputSpec(height=64, width=64, views=("frontal", "lateral"))
    served_frontal = prepare_image_file(frontal, spec, "frontal").pixels
    served_lateral = prepare_image_file(lateral, spec, "lateral").pixels
    val = LabeledImages([record], ("nodule",), spec, None, seed=0).item(0, 0)
    assert np.array_equal(val["images"][0].numpy(), served_frontal)
    assert np.array_equal(val["images"][1].numpy(), served_lateral)
    assert val["box_mask"][0] == 1.0
    train = LabeledImages([record], ("nodule",), spec, STILL, seed=0, train=True).item(0, 0)
    for slot, served in enumerate((served_frontal, served_lateral)):  # same picture, resampled
        assert np.abs(train["images"][slot].numpy() - served).mean() < 0.05
    assert train["box_mask"][0] == 1.0


def test_intensity_augmentation_changes_display_values_and_is_not_renormalised(
    shared_data: Path,
) -> None:
    display = image_file_to_display(nih_records(shared_data, 1)[0].images[0].path)
    brighter = STILL.model_copy(update={"brightness": 0.1})
    for seed in range(4):
        rng = np.random.default_rng(seed)
        shifted, _ = augment_display(display, np.zeros((0, 4)), brighter, rng)
        assert shifted.min() >= 0.0 and shifted.max() <= 1.0
        # Every other range is empty, so the brightness is the one draw it made.
        delta = float(np.random.default_rng(seed).uniform(-0.1, 0.1))
        free = (display > 0.15) & (display < 0.85)
        np.testing.assert_allclose(shifted[free], display[free] + delta, atol=1e-4)
        # prepare_display letterboxes and applies mean/std only: the shift reaches the model.
        plain = prepare_display(display, SPEC).pixels
        moved = prepare_display(shifted, SPEC).pixels
        assert float((moved - plain).mean()) * SPEC.std == pytest.approx(delta, abs=0.02)
    gamma = STILL.model_copy(update={"gamma": (1.5, 1.5)})
    darker, _ = augment_display(display, np.zeros((0, 4)), gamma, np.random.default_rng(0))
    np.testing.assert_allclose(darker, display**1.5, atol=1e-4)


def _recipe(shared_data: Path, language: str, sections: list[str]) -> Recipe:
    return Recipe.model_validate({
        "name": "t", "path": "unpaired",
        "data": {"nih_root": str(shared_data / "nih"), "iu_root": str(shared_data / "iu_xray")},
        "text": {"language": language, "sections": sections},
    })


def test_report_targets_keep_findings_and_impression_apart(shared_data: Path) -> None:
    records = [
        r for r in create_dataset("iu_xray", shared_data / "iu_xray", split="train")
        if r.sections.get("en", {}).get("findings") and r.sections["en"].get("impression")
    ][:20]
    english = _recipe(shared_data, "en", ["findings", "impression"])
    for record in records:
        target = report_target(record, english)
        assert target == ReportTarget(record.sections["en"]["findings"].strip(),
                                      record.sections["en"]["impression"].strip())
    only_findings = report_target(records[0], _recipe(shared_data, "en", ["findings"]))
    assert only_findings is not None and not only_findings.impression
    spanish = [report_target(r, _recipe(shared_data, "es", ["findings", "impression"]))
               for r in records]
    both = [t for t in spanish if t is not None and t.findings and t.impression]
    assert len(both) >= len(records) // 2, spanish  # the bridge realises each section apart
    assert not any("There is" in t.text for t in both)
