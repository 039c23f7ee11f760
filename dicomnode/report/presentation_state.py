"""Located findings drawn for viewers that do not draw SR coordinates: a GSPS per image.

Many PACS viewers ignore the SCOORDs of a TID 1500 SR but do apply a Grayscale
Softcopy Presentation State (PS3.3 A.33.1) stored in the same study. For every
source image that carries at least one drawn finding, the node writes one GSPS
(highdicom :class:`highdicom.pr.GrayscaleSoftcopyPresentationState`) with, on one
graphic layer:

- the finding's box as a closed POLYLINE in image pixels (on the analysed frame of a
  multi-frame image);
- a Spanish text label above it: name, side and probability ("prob. 0,87", never
  "p=", which reads as a p-value), laid out so that no two labels overlap;
- a warning in the top-left corner that this is an unvalidated automatic draft.

Only findings coded present are drawn by default (``findings="present"``); with many
findings, drawing the uncertain ones too covers the image in boxes.

The presentation state must show the image as the modality meant it: Presentation LUT
Shape INVERSE for a MONOCHROME1 source (IDENTITY would display it as a negative), and
the source's own rescale and window.

Writing it is optional (``with_presentation_state`` in the builder), and a failure to
build it never costs the SRs (the builder logs it and goes on).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal, get_args

import highdicom as hd
from pydicom import Dataset
from pydicom.multival import MultiValue

from dicomnode.report.measurement_report import finding_label_es, region_polyline
from dicomnode.report.provenance import (
    analysed_frame,
    contributing_equipment,
    finish_draft_header,
)
from engine.result import FindingResult, StudyReport

logger = logging.getLogger(__name__)

#: Which findings a presentation state draws.
DrawnFindings = Literal["present", "present_and_uncertain"]
DRAWN_FINDINGS: tuple[str, ...] = get_args(DrawnFindings)
_DRAWN_PRESENCES: dict[str, frozenset[str]] = {
    "present": frozenset({"present"}),
    "present_and_uncertain": frozenset({"present", "uncertain"}),
}

#: Content Label (CS: capitals, digits, underscore) identifying the node's presentation states.
CONTENT_LABEL = "BORRADOR_IA"
CONTENT_DESCRIPTION = "Hallazgos localizados por IA, sin validar"
WARNING_TEXT = "BORRADOR IA - NO VALIDADO POR RADIÓLOGO"
LAYER_NAME = "HALLAZGOS_IA"
SERIES_DESCRIPTION_ES = "Borrador IA: anotaciones sin validar"

# Text boxes are sized relative to the image so labels stay legible on any matrix: a line
# is 3.5 % of the image height and each character about 0.6 of the line height wide.
_LABEL_HEIGHT = 0.035
_CHAR_WIDTH = 0.6

Box = tuple[float, float, float, float]


def drawn_findings(
    report: StudyReport, source: Dataset, findings: DrawnFindings = "present"
) -> list[FindingResult]:
    """The located findings on ``source`` that its presentation state draws."""
    if findings not in _DRAWN_PRESENCES:
        raise ValueError(f"findings must be one of {DRAWN_FINDINGS}, got {findings!r}")
    presences = _DRAWN_PRESENCES[findings]
    return [
        f
        for f in report.findings
        if f.region is not None
        and f.region.sop_instance_uid == source.SOPInstanceUID
        and f.presence in presences
    ]


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def text_box(text: str, left: float, top: float, rows: int, columns: int) -> Box:
    """(left, top, right, bottom) of one line of ``text`` at (left, top), inside the image."""
    height = max(1.0, rows * _LABEL_HEIGHT)
    width = min(float(columns), len(text) * height * _CHAR_WIDTH)
    left = max(0.0, min(left, columns - width))
    top = max(0.0, min(top, rows - height))
    return (left, top, left + width, top + height)


def label_box(
    finding: FindingResult, text: str, rows: int, columns: int, taken: Sequence[Box] = ()
) -> Box:
    """Where the label of ``finding`` goes: just above its box (inside it at the image top),
    moved down line by line past the labels already ``taken``, so none overlaps another."""
    assert finding.region is not None
    region = finding.region
    height = max(1.0, rows * _LABEL_HEIGHT)
    top = region.y_min - height if region.y_min >= height else region.y_min
    box = text_box(text, region.x_min, top, rows, columns)
    for _ in range(int(rows / height) + 1):
        if not any(_overlaps(box, other) for other in taken):
            return box
        top = box[3] if box[3] + height <= rows else 0.0
        box = text_box(text, box[0], top, rows, columns)
    return box  # every line is taken: overlapping beats dropping a label


def findings_annotation(
    source: Dataset,
    findings: Sequence[FindingResult],
    layer: hd.pr.GraphicLayer,
    *,
    frame_number: int | None = None,
) -> hd.pr.GraphicAnnotation:
    """Boxes and Spanish labels of ``findings`` (all located on ``source``), plus the warning."""
    rows, columns = int(source.Rows), int(source.Columns)
    warning = text_box(WARNING_TEXT, 0.0, 0.0, rows, columns)
    taken: list[Box] = [warning]
    graphics = []
    texts = [
        hd.pr.TextObject(
            text_value=WARNING_TEXT,
            units=hd.pr.AnnotationUnitsValues.PIXEL,
            bounding_box=warning,
            text_justification=hd.pr.TextJustificationValues.LEFT,
        )
    ]
    for finding in findings:
        assert finding.region is not None
        graphics.append(
            hd.pr.GraphicObject(
                graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                graphic_data=region_polyline(finding.region, source),
                units=hd.pr.AnnotationUnitsValues.PIXEL,
            )
        )
        text = finding_label_es(finding)
        box = label_box(finding, text, rows, columns, taken)
        taken.append(box)
        texts.append(
            hd.pr.TextObject(
                text_value=text,
                units=hd.pr.AnnotationUnitsValues.PIXEL,
                bounding_box=box,
                text_justification=hd.pr.TextJustificationValues.LEFT,
            )
        )
    return hd.pr.GraphicAnnotation(
        referenced_images=[source],
        graphic_layer=layer,
        graphic_objects=graphics,
        text_objects=texts,
        referenced_frame_number=frame_number,
    )


def presentation_lut(source: Dataset) -> hd.PresentationLUTTransformation:
    """INVERSE for MONOCHROME1 (low values white), IDENTITY otherwise (PS3.3 C.11.6)."""
    inverse = str(source.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    return hd.PresentationLUTTransformation(
        presentation_lut_shape=(
            hd.PresentationLUTShapeValues.INVERSE
            if inverse
            else hd.PresentationLUTShapeValues.IDENTITY
        )
    )


def legacy_multiframe_luts(
    source: Dataset,
) -> tuple[hd.ModalityLUTTransformation | None, list[hd.pr.SoftcopyVOILUTTransformation] | None]:
    """Modality and VOI transformations of a multi-frame image without functional groups.

    highdicom reads them from the Shared Functional Groups of any multi-frame IOD, which a
    multi-frame Secondary Capture does not have: they are taken from its top-level
    attributes here (the full stored range as window when it has none). ``(None, None)``
    for other images, which highdicom handles itself.
    """
    if "NumberOfFrames" not in source or "SharedFunctionalGroupsSequence" in source:
        return None, None
    modality = hd.ModalityLUTTransformation(
        rescale_intercept=float(source.get("RescaleIntercept", 0) or 0),
        rescale_slope=float(source.get("RescaleSlope", 1) or 1),
        rescale_type=str(source.get("RescaleType", "") or "US"),
    )
    if source.get("WindowCenter") is not None and source.get("WindowWidth") is not None:
        voi = hd.pr.SoftcopyVOILUTTransformation(
            window_center=_first(source.WindowCenter),
            window_width=_first(source.WindowWidth),
        )
    else:
        bits = int(source.get("BitsStored") or 8)
        voi = hd.pr.SoftcopyVOILUTTransformation(
            window_center=float(2 ** (bits - 1)), window_width=float(2**bits)
        )
    return modality, [voi]


def _first(value: object) -> float:
    """The first of a multi-valued DS (images may carry several windows)."""
    if isinstance(value, (list, tuple, MultiValue)):
        return float(value[0])
    return float(value)  # type: ignore[arg-type]


class FindingsPresentationState(hd.pr.GrayscaleSoftcopyPresentationState):
    """GSPS outlining the engine's located findings on one source image, with Spanish labels.

    ``findings`` chooses what is drawn: ``"present"`` (default) or ``"present_and_uncertain"``.
    """

    def __init__(
        self,
        report: StudyReport,
        source: Dataset,
        *,
        series_instance_uid: str,
        series_number: int,
        sop_instance_uid: str,
        instance_number: int,
        institution_name: str | None = None,
        findings: DrawnFindings = "present",
    ) -> None:
        if not isinstance(report, StudyReport):
            raise TypeError(f"report must be a StudyReport, got {type(report).__name__}")
        if not isinstance(source, Dataset):
            raise TypeError(f"source must be a pydicom Dataset, got {type(source).__name__}")
        located = drawn_findings(report, source, findings)
        if not located:
            raise ValueError(
                f"source image {source.SOPInstanceUID} has no located finding to draw: "
                "write no presentation state for it"
            )
        modality_lut, voi_luts = legacy_multiframe_luts(source)
        layer = hd.pr.GraphicLayer(
            layer_name=LAYER_NAME,
            order=1,
            description="Hallazgos del algoritmo (borrador)",
            display_color=hd.color.CIELabColor(60.0, 80.0, 60.0),
        )
        super().__init__(
            referenced_images=[source],
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            instance_number=instance_number,
            manufacturer=report.engine.manufacturer,
            manufacturer_model_name=report.engine.name,
            software_versions=report.engine.version,
            device_serial_number=report.engine.sha256[:64],
            content_label=CONTENT_LABEL,
            content_description=CONTENT_DESCRIPTION,
            graphic_annotations=[
                findings_annotation(
                    source, located, layer, frame_number=analysed_frame(report, source)
                )
            ],
            graphic_layers=[layer],
            institution_name=institution_name,
            contributing_equipment=[contributing_equipment(report.engine)],
            specific_character_set="ISO_IR 192",
            modality_lut_transformation=modality_lut,
            voi_lut_transformations=voi_luts,
            presentation_lut_transformation=presentation_lut(source),
        )
        finish_draft_header(self, report)
        self.SeriesDescription = SERIES_DESCRIPTION_ES
        # General Series Laterality (2C) is for paired body parts. dciodvfy cannot see that the
        # chest is unpaired and calls it missing when absent, so carry the source's value, or
        # leave it empty (unknown) rather than guess a side (docs/report-objects.md).
        self.Laterality = source.get("Laterality", "") or ""
