"""Dataset images as model inputs, through the engine's one pipeline (:mod:`engine.preprocessing`).

Training must see what the node serves: the same intensity normalisation, the same letterbox
(with the train-time aspect augmentation the manifest's input spec asks for), the same view
choice, and box targets on the model grid rather than on the source image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.artifact import InputSpec
from engine.preprocessing import PreparedImage, View, prepare_image_file, sample_train_aspect
from engine.views import select_view_files
from training.data.records import StudyRecord


def prepare_record_image(
    record: StudyRecord,
    index: int,
    spec: InputSpec,
    view: View = "frontal",
    *,
    rng: np.random.Generator | None = None,
) -> PreparedImage:
    """Image ``index`` of ``record`` as the encoder's input plane.

    ``rng`` (training): the train-time letterbox of ``spec`` is sampled from it; None
    (validation, test, evaluation): the image is placed exactly as the node would place it.
    The adapter's declared bit depth (``ImageRef.bits_stored``) is used for 16-bit PNGs.
    Raises :class:`engine.exceptions.ImageRejectedError` for images the model must not see.
    """
    ref = record.images[index]
    aspect = sample_train_aspect(spec, rng) if rng is not None else None
    return prepare_image_file(
        ref.path, spec, view, bits_stored=ref.bits_stored, train_aspect=aspect
    )


def record_views(record: StudyRecord) -> tuple[int, int | None, str]:
    """Indices of the frontal and lateral images of ``record`` (lateral None when absent) and
    why, by the node's rule (:func:`engine.views.select_view_files`)."""
    paths = [Path(ref.path) for ref in record.images]
    frontal, lateral, reason = select_view_files(
        [(p, ref.view) for p, ref in zip(paths, record.images, strict=True)], record.study_id
    )
    return (
        paths.index(frontal),
        paths.index(lateral) if lateral is not None else None,
        reason,
    )


def box_targets(
    record: StudyRecord, index: int, prepared: PreparedImage
) -> list[tuple[str, tuple[float, float, float, float]]]:
    """The record's boxes on image ``index`` as box-head targets: (finding key, box in fractions
    of the model grid), mapped with the letterbox ``prepared`` was made with."""
    to_model = prepared.letterbox.box_from_source
    return [
        (box.finding, to_model((box.x_min, box.y_min, box.x_max, box.y_max)))
        for box in record.boxes
        if box.image_index == index
    ]
