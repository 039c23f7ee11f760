"""Located findings drawn for viewers that do not draw SR coordinates: a GSPS per image.

Many PACS viewers ignore the SCOORDs of a TID 1500 SR but do apply a Grayscale
Softcopy Presentation State (PS3.3 A.33.1) stored in the same study. For every
source image that carries at least one located finding, the node writes one GSPS
(highdicom :class:`highdicom.pr.GrayscaleSoftcopyPresentationState`) with, on one
graphic layer:

- the finding's box as a closed POLYLINE in image pixels;
- a Spanish text label above it: name, side, presence and probability;
- a warning in the top-left corner that this is an unvalidated automatic draft.

Writing it is optional (``with_presentation_state`` in the builder).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset

from dicomnode.report.measurement_report import finding_label_es, region_polyline
from dicomnode.report.provenance import contributing_equipment, finish_draft_header
from engine.result import FindingResult, StudyReport

logger = logging.getLogger(__name__)

#: Content Label (CS: capitals, digits, underscore) identifying the node's presentation states.
CONTENT_LABEL = "BORRADOR_IA"
CONTENT_DESCRIPTION = "Hallazgos localizados por IA, sin validar"
WARNING_TEXT = "BORRADOR IA - NO VALIDADO POR RADIÓLOGO"
LAYER_NAME = "HALLAZGOS_IA"
SERIES_DESCRIPTION_ES = "Borrador IA: anotaciones sin validar"

# Text boxes are sized relative to the image so labels stay legible on any matrix.
_LABEL_HEIGHT = 0.04
_LABEL_MIN_WIDTH = 0.35


def label_box(finding: FindingResult, rows: int, columns: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the label: above the box, or inside it at the image top."""
    assert finding.region is not None
    region = finding.region
    height = max(1.0, rows * _LABEL_HEIGHT)
    left = region.x_min
    right = min(float(columns), max(region.x_max, left + columns * _LABEL_MIN_WIDTH))
    if region.y_min >= height:
        top, bottom = region.y_min - height, region.y_min
    else:
        top, bottom = region.y_min, min(float(rows), region.y_min + height)
    return (left, top, right, bottom)


def findings_annotation(
    source: Dataset, findings: Sequence[FindingResult], layer: hd.pr.GraphicLayer
) -> hd.pr.GraphicAnnotation:
    """Boxes and Spanish labels of ``findings`` (all located on ``source``), plus the warning."""
    rows, columns = int(source.Rows), int(source.Columns)
    graphics = []
    texts = [
        hd.pr.TextObject(
            text_value=WARNING_TEXT,
            units=hd.pr.AnnotationUnitsValues.PIXEL,
            bounding_box=(0.0, 0.0, columns * 0.6, max(1.0, rows * _LABEL_HEIGHT)),
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
        texts.append(
            hd.pr.TextObject(
                text_value=finding_label_es(finding),
                units=hd.pr.AnnotationUnitsValues.PIXEL,
                bounding_box=label_box(finding, rows, columns),
                text_justification=hd.pr.TextJustificationValues.LEFT,
            )
        )
    return hd.pr.GraphicAnnotation(
        referenced_images=[source],
        graphic_layer=layer,
        graphic_objects=graphics,
        text_objects=texts,
    )


class FindingsPresentationState(hd.pr.GrayscaleSoftcopyPresentationState):
    """GSPS outlining the engine's located findings on one source image, with Spanish labels."""

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
    ) -> None:
        if not isinstance(report, StudyReport):
            raise TypeError(f"report must be a StudyReport, got {type(report).__name__}")
        if not isinstance(source, Dataset):
            raise TypeError(f"source must be a pydicom Dataset, got {type(source).__name__}")
        located = [
            f
            for f in report.findings
            if f.region is not None and f.region.sop_instance_uid == source.SOPInstanceUID
        ]
        if not located:
            raise ValueError(
                f"source image {source.SOPInstanceUID} has no located finding: write no "
                "presentation state for it"
            )
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
            graphic_annotations=[findings_annotation(source, located, layer)],
            graphic_layers=[layer],
            institution_name=institution_name,
            contributing_equipment=[contributing_equipment(report.engine)],
            specific_character_set="ISO_IR 192",
        )
        finish_draft_header(self, report)
        self.SeriesDescription = SERIES_DESCRIPTION_ES
        # dciodvfy treats General Series Laterality (2C) as required for projection images:
        # carry the source's value, or leave it empty (unknown) rather than guess a side.
        self.Laterality = source.get("Laterality", "") or ""
