"""Dataset records through the engine's one pipeline: images, views and box targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.artifact import InputSpec
from training.data.images import box_targets, prepare_record_image, record_views
from training.data.records import Box, ImageRef, StudyRecord

SPEC = InputSpec(height=224, width=224, train_letterbox="random-aspect", train_letterbox_p=1.0)


def _record(images: tuple[ImageRef, ...], boxes: tuple[Box, ...] = ()) -> StudyRecord:
    return StudyRecord("test", "s1", images, {}, {}, "train", boxes)


def test_box_targets_follow_the_letterbox(shared_data: Path, tmp_path: Path) -> None:
    # A portrait image (a crop of a real NIH radiograph) with a box over its right half.
    path = tmp_path / "portrait.png"
    with Image.open(shared_data / "nih" / "images_512" / "00000150_002.jpg") as img:
        img.convert("L").crop((56, 0, 456, 512)).save(path)
    record = _record((ImageRef(path, "PA"),), (Box("pleural_effusion", 0, 0.5, 0.25, 1.0, 0.75),))
    served = prepare_record_image(record, 0, SPEC)  # no rng: placed as the node places it
    [(key, (x0, y0, x1, y1))] = box_targets(record, 0, served)
    assert key == "pleural_effusion" and (y0, y1) == pytest.approx((0.25, 0.75))
    # Not the source fractions: the bars shift and shrink the box on the model grid.
    assert x0 == pytest.approx(0.5, abs=0.01) and x1 < 0.9
    box = served.letterbox
    assert box.box_to_source((x0, y0, x1, y1)) == pytest.approx((200, 128, 400, 384), abs=0.5)
    # Training: the sampled aspect changes the geometry and the targets follow it.
    trained = prepare_record_image(record, 0, SPEC, rng=np.random.default_rng(3))
    [(_, moved)] = box_targets(record, 0, trained)
    assert trained.letterbox != served.letterbox
    assert trained.letterbox.box_to_source(moved) == pytest.approx((200, 128, 400, 384), abs=0.5)


def test_declared_bit_depth_reaches_the_pipeline(shared_data: Path, tmp_path: Path) -> None:
    with Image.open(shared_data / "nih" / "images_512" / "00000165_001.jpg") as img:
        grey = np.asarray(img.convert("L"))
    path = tmp_path / "twelve.png"
    Image.fromarray((grey.astype(np.uint16) * 16).astype(np.uint16)).save(path)
    record = _record((ImageRef(path, "PA", bits_stored=12),))
    reference = prepare_record_image(
        _record((ImageRef(shared_data / "nih" / "images_512" / "00000165_001.jpg", "PA"),)),
        0, SPEC,
    )
    assert np.abs(prepare_record_image(record, 0, SPEC).pixels - reference.pixels).mean() < 1e-3
    with pytest.raises(ValueError, match="bits_stored"):
        ImageRef(path, "PA", bits_stored=20)


def test_record_views_by_the_node_rule(shared_data: Path) -> None:
    frontal = shared_data / "nih" / "images_512" / "00000193_019.jpg"
    lateral = shared_data / "lateral_chest" / "images" / "000017-1.jpg"
    unlabelled = _record((ImageRef(lateral), ImageRef(frontal)))
    front, side, reason = record_views(unlabelled)
    assert (front, side) == (1, 0) and reason.startswith("pixels")
    labelled = _record((ImageRef(lateral, "LATERAL"), ImageRef(frontal, "PA")))
    assert record_views(labelled)[:2] == (1, 0)


def test_padchest_declares_the_dicom_bit_depth() -> None:
    from training.data.padchest import declared_bits

    assert declared_bits("12") == 12
    assert declared_bits("12.0") == 12
    assert declared_bits("") is None and declared_bits(None) is None
    assert declared_bits("32") is None  # not a plausible depth: let the values speak
