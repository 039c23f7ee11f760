"""The report objects as a PACS viewer, a RIS and an AI-results consumer read them.

Judged by the field's tools: DCMTK ``dcmp2pgm`` renders each source image with and without
its presentation state, dciodvfy validates every object (no warning of our making), highdicom
reads back every TID 1500 group, dsr2html renders the text.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import Dataset
from pydicom.sr._cid_dict import cid_concepts
from pydicom.sr._concepts_dict import concepts
from pydicom.uid import (
    BasicTextSRStorage,
    Comprehensive3DSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
)

from dicomnode.config import ReportConfig
from dicomnode.report import build_report_objects, codes
from dicomnode.report.measurement_report import finding_label_es
from engine.result import AnalysedImage, FindingCode, FindingResult, Region, StudyReport
from tests.report.report_samples import (
    CARDIOMEGALY,
    EFFUSION,
    PNEUMOTHORAX,
    make_report,
)
from tests.support.dcmtk import require_dcmtk_tool
from tests.support.dicom_peers import dsr2html, require_tool

NO_FINDING = FindingCode("281900007", "SCT", "Sin hallazgos patológicos", "No finding")
CONSOLIDATION = FindingCode("95436008", "SCT", "Consolidación", "Consolidation")
BRONCHIECTASIS = FindingCode("12295008", "SCT", "Bronquiectasias", "Bronchiectasis")


# -- helpers ---------------------------------------------------------------------------------


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def by_class(objects: list[Dataset], sop_class: str) -> list[Dataset]:
    return [ds for ds in objects if ds.SOPClassUID == sop_class]


def dciodvfy_lines(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) dciodvfy prints for one file."""
    proc = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    return (
        [line for line in lines if line.startswith("Error")],
        [line.strip() for line in lines if line.startswith("Warning")],
    )


#: The warnings of our objects not found in the sources, both explained in
#: docs/report-objects.md: General Series Laterality (2C) left empty on a presentation state
#: of an unpaired body part, and the local coding scheme 99CXR (declared in the Coding Scheme
#: Identification Sequence, which dciodvfy does not read) where a finding's code is local.
EXPLAINED = (
    "should be absent (not empty) if an unpaired body part",
    "Unrecognized defined term <99CXR> for value 1 of attribute <Coding Scheme Designator>",
)


def assert_no_warnings_of_ours(path: Path, source_paths: list[Path]) -> None:
    """No error, and every warning is one the source images themselves get (copied patient
    and study attributes), or the documented empty Laterality of a presentation state."""
    errors, warnings = dciodvfy_lines(path)
    assert not errors, f"dciodvfy {path.name}: {errors}"
    inherited = {w for p in source_paths for w in dciodvfy_lines(p)[1]}
    ours = [w for w in warnings if w not in inherited and not any(e in w for e in EXPLAINED)]
    assert not ours, f"dciodvfy {path.name}: warnings of our making: {ours}"


def located_report(
    source: Dataset,
    *,
    presence: str = "present",
    analysed: tuple[AnalysedImage, ...] = (),
) -> StudyReport:
    rows, columns = int(source.Rows), int(source.Columns)
    region = Region(
        str(source.SOPInstanceUID), columns * 0.55, rows * 0.1, columns * 0.9, rows * 0.45
    )
    findings = (
        FindingResult("pneumothorax", PNEUMOTHORAX, presence, 0.87, "left", region),  # type: ignore[arg-type]
        FindingResult("pleural_effusion", EFFUSION, "absent", 0.04),
    )
    return dataclasses.replace(make_report([source], findings=findings), analysed_images=analysed)


def uncompressed_copy(path: Path, directory: Path) -> Path:
    """The image with its pixel data decoded: Debian's dcmp2pgm has no JPEG 2000 decoder."""
    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    return save(ds, directory / f"plain_{path.name}")


def render(image: Path, out: Path, pstate: Path | None = None, frame: int = 1) -> np.ndarray:
    """What a viewer applying the presentation state displays (DCMTK ``dcmp2pgm``)."""
    args = [require_dcmtk_tool("dcmp2pgm"), "--frame", str(frame)]
    if pstate is not None:
        args += ["--pstate", str(pstate)]
    proc = subprocess.run([*args, str(image), str(out)], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    with Image.open(out) as img:
        return np.asarray(img, dtype=np.float64)


def make_multiframe(source: Path, out: Path) -> Path:
    """A real radiograph as a two-frame Multi-frame Grayscale Byte Secondary Capture, frame 2
    mirrored (so a reader who shows the wrong frame is caught)."""
    ds = pydicom.dcmread(source)
    pixels = ds.pixel_array
    assert pixels.dtype == np.uint8 and ds.PhotometricInterpretation == "MONOCHROME2"
    ds.decompress()
    ds.NumberOfFrames = 2
    ds.FrameIncrementPointer = pydicom.tag.Tag("PageNumberVector")
    ds.PageNumberVector = [1, 2]
    ds.PixelData = np.stack([pixels, pixels[:, ::-1]]).tobytes()
    ds.SOPClassUID = pydicom.uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage
    ds.SOPInstanceUID = pydicom.uid.generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    # What the multi-frame SC IOD asks for that the single-frame source lacked.
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    del ds.PatientAge  # "62" is invalid AS in the source; the made file should be valid
    return save(ds, out)


@pytest.fixture(scope="module")
def multiframe_path(dicom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("multiframe") / "mf_sc.dcm"
    path = make_multiframe(dicom_dir / "siim_chest_cr_jpeg_baseline.dcm", out)
    errors, _ = dciodvfy_lines(path)
    assert not errors, errors
    return path


def with_request(source: Dataset) -> Dataset:
    """A real header given the order it was acquired for, as a RIS-driven modality writes it."""
    ds = copy.deepcopy(source)
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "RPID1001", "99HOSP"
    code.CodeMeaning = "Rx tórax PA y lateral"
    request = Dataset()
    request.AccessionNumber = "ACC20261202"
    request.RequestedProcedureID = "RP-77"
    request.RequestedProcedureDescription = "Radiografía de tórax"
    request.RequestedProcedureCodeSequence = [code]
    request.ScheduledProcedureStepID = "SPS-5"
    request.PlacerOrderNumberImagingServiceRequest = "PLACER-1"
    request.FillerOrderNumberImagingServiceRequest = "FILLER-9"
    ds.RequestAttributesSequence = [request]
    ds.AccessionNumber = "ACC20261202"
    performed = Dataset()
    performed.CodeValue, performed.CodingSchemeDesignator = "RPID1001", "99HOSP"
    performed.CodeMeaning = "Rx tórax PA y lateral"
    ds.ProcedureCodeSequence = [performed]
    return ds


# -- presentation state: polarity, multi-frame, what is drawn --------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "rg1_chest_cr_uncompressed.dcm",  # MONOCHROME1, 15-bit CR
        "siim_chest_cr_monochrome1.dcm",  # MONOCHROME1 Secondary Capture
        "siim_chest_cr_jpeg_baseline.dcm",  # MONOCHROME2
        "highdicom_dx_canine_thorax.dcm",  # MONOCHROME1 DX
    ],
)
def test_presentation_state_keeps_the_source_polarity(
    name: str, dicom_dir: Path, tmp_path: Path
) -> None:
    image = uncompressed_copy(dicom_dir / name, tmp_path)
    source = pydicom.dcmread(image, stop_before_pixels=True)
    objects = build_report_objects(located_report(source), [source])
    (pr,) = by_class(objects, GrayscaleSoftcopyPresentationStateStorage)
    expected = "INVERSE" if source.PhotometricInterpretation == "MONOCHROME1" else "IDENTITY"
    assert pr.PresentationLUTShape == expected
    plain = render(image, tmp_path / "plain.pgm")
    shown = render(image, tmp_path / "pstate.pgm", save(pr, tmp_path / "pr.dcm"))
    assert plain.shape == shown.shape
    # Same picture, same polarity: a negative would correlate at about -1.
    assert np.corrcoef(plain.ravel(), shown.ravel())[0, 1] > 0.95


def test_multiframe_source_is_reported_end_to_end(
    multiframe_path: Path, tiny_artifact: object, tmp_path: Path
) -> None:
    from engine.runtime import create_engine

    engine = create_engine(tiny_artifact, "onnxruntime", allow_test_artifact=True)  # type: ignore[arg-type]
    full = pydicom.dcmread(multiframe_path)
    report = engine.report_study([full])
    assert [
        (a.sop_instance_uid, a.role, a.view, a.frame_number) for a in report.analysed_images
    ] == [(full.SOPInstanceUID, "frontal", "PA", 1)]
    header = pydicom.dcmread(multiframe_path, stop_before_pixels=True)
    # Whatever the random-weight engine scored, add a located finding so a GSPS is drawn.
    region = Region(header.SOPInstanceUID, 600, 100, 900, 450)
    report = dataclasses.replace(
        report,
        findings=(
            *report.findings,
            FindingResult("pneumothorax_test", PNEUMOTHORAX, "present", 0.9, "left", region),
        ),
    )
    objects = build_report_objects(report, [header])
    classes = [str(ds.SOPClassUID) for ds in objects]
    assert classes[:2] == [BasicTextSRStorage, Comprehensive3DSRStorage]
    (pr,) = by_class(objects, GrayscaleSoftcopyPresentationStateStorage)
    # The graphics name the frame the engine analysed.
    assert pr.GraphicAnnotationSequence[0].ReferencedImageSequence[0].ReferencedFrameNumber == 1
    paths = [save(ds, tmp_path / f"{i}_{ds.Modality}.dcm") for i, ds in enumerate(objects)]
    for path in paths:
        assert_no_warnings_of_ours(path, [multiframe_path])
    # The SCOORD names the frame too, and highdicom reads it back.
    sr = hd.sr.srread(paths[1])
    located = sr.content.get_planar_roi_measurement_groups()
    assert PNEUMOTHORAX.value in [g.finding_type.value for g in located]
    for group in located:
        reference = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
        assert reference.ReferencedSOPInstanceUID == header.SOPInstanceUID
        assert reference.ReferencedFrameNumber == 1
    # Frame 1 rendered with the presentation state is frame 1 of the image, not its mirror.
    plain = render(multiframe_path, tmp_path / "f1.pgm", frame=1)
    shown = render(multiframe_path, tmp_path / "f1ps.pgm", paths[2], frame=1)
    assert np.corrcoef(plain.ravel(), shown.ravel())[0, 1] > 0.95
    narrative = pydicom.dcmread(paths[0])
    (procedure,) = [
        item.ContentSequence[0].TextValue
        for item in narrative.ContentSequence
        if item.ValueType == "CONTAINER"
        and item.ConceptNameCodeSequence[0].CodeValue == codes.CURRENT_PROCEDURE.value
    ]
    assert "fotograma 1 de 2" in procedure and header.SOPInstanceUID in procedure


def test_a_failed_presentation_state_never_costs_the_reports(
    rg1_sources: list[Dataset],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from dicomnode.report import presentation_state

    def broken(*args: object, **kwargs: object) -> None:
        raise AttributeError(
            "'FileDataset' object has no attribute 'SharedFunctionalGroupsSequence'"
        )

    monkeypatch.setattr(presentation_state.FindingsPresentationState, "__init__", broken)
    with caplog.at_level(logging.ERROR, logger="dicomnode.report.builder"):
        objects = build_report_objects(make_report(rg1_sources), rg1_sources)
    assert [str(ds.SOPClassUID) for ds in objects] == [BasicTextSRStorage, Comprehensive3DSRStorage]
    assert "presentation state" in caplog.text and "could not be built" in caplog.text


def _many_located(source: Dataset) -> StudyReport:
    rows, columns = int(source.Rows), int(source.Columns)
    findings = []
    for i, presence in enumerate(["present", "uncertain", "present", "uncertain", "present"]):
        region = Region(
            str(source.SOPInstanceUID),
            columns * (0.1 + 0.05 * i),
            rows * (0.2 + 0.02 * i),
            columns * (0.6 + 0.05 * i),
            rows * (0.7 + 0.02 * i),
        )
        code = FindingCode(f"1000{i}", "SCT", f"Hallazgo número {i}")
        findings.append(FindingResult(f"f{i}", code, presence, 0.4 + 0.1 * i, None, region))  # type: ignore[arg-type]
    return make_report([source], findings=tuple(findings))


def test_presentation_state_draws_present_findings_legibly(rg1_sources: list[Dataset]) -> None:
    source = rg1_sources[0]
    report = _many_located(source)
    rows, columns = int(source.Rows), int(source.Columns)
    (pr,) = by_class(
        build_report_objects(report, [source]), GrayscaleSoftcopyPresentationStateStorage
    )
    annotation = pr.GraphicAnnotationSequence[0]
    assert len(annotation.GraphicObjectSequence) == 3  # the present ones only
    texts = [t.UnformattedTextValue for t in annotation.TextObjectSequence]
    assert texts[1:] == [
        "Hallazgo número 0 (prob. 0,40)",
        "Hallazgo número 2 (prob. 0,60)",
        "Hallazgo número 4 (prob. 0,80)",
    ]
    assert not any("p=" in t for t in texts)
    (everything,) = by_class(
        build_report_objects(report, [source], presentation_state_findings="present_and_uncertain"),
        GrayscaleSoftcopyPresentationStateStorage,
    )
    annotation = everything.GraphicAnnotationSequence[0]
    assert len(annotation.GraphicObjectSequence) == 5
    assert "Hallazgo número 1: presencia indeterminada (prob. 0,50)" in [
        t.UnformattedTextValue for t in annotation.TextObjectSequence
    ]
    boxes = [
        (t.BoundingBoxTopLeftHandCorner, t.BoundingBoxBottomRightHandCorner, t.UnformattedTextValue)
        for t in annotation.TextObjectSequence
    ]
    for tl, br, text in boxes:
        assert 0 <= tl[0] < br[0] <= columns and 0 <= tl[1] < br[1] <= rows
        height = br[1] - tl[1]
        assert height >= rows * 0.03  # legible on the full image
        assert br[0] - tl[0] >= min(columns, 0.5 * height * len(text))  # room for the text
    for (a_tl, a_br, _), (b_tl, b_br, _) in itertools.combinations(boxes, 2):
        apart = a_br[0] <= b_tl[0] or b_br[0] <= a_tl[0] or a_br[1] <= b_tl[1] or b_br[1] <= a_tl[1]
        assert apart, "two labels overlap"
    with pytest.raises(ValueError, match="presentation_state_findings"):
        build_report_objects(report, [source], presentation_state_findings="all")  # type: ignore[arg-type]
    assert ReportConfig().presentation_state_findings == "present"


def test_laterality_agrees_with_any_finding_name() -> None:
    right = FindingResult("consolidation", CONSOLIDATION, "present", 0.58, "right")
    both = FindingResult("bronchiectasis", BRONCHIECTASIS, "uncertain", 0.3, "bilateral")
    assert finding_label_es(right) == "Consolidación en hemitórax derecho (prob. 0,58)"
    assert finding_label_es(both) == (
        "Bronquiectasias en ambos hemitórax: presencia indeterminada (prob. 0,30)"
    )


# -- SR documents: what a RIS and an AI-results consumer read -----------------------------------


def test_referenced_request_and_procedure_codes_come_from_the_source(
    rg1_sources: list[Dataset], dicom_dir: Path, tmp_path: Path
) -> None:
    source = with_request(rg1_sources[0])
    source_path = save(copy.deepcopy(source), tmp_path / "source.dcm")
    objects = build_report_objects(make_report([source]), [source])
    for ds in by_class(objects, BasicTextSRStorage) + by_class(objects, Comprehensive3DSRStorage):
        (request,) = ds.ReferencedRequestSequence
        assert request.StudyInstanceUID == source.StudyInstanceUID
        assert request.AccessionNumber == "ACC20261202"
        assert request.RequestedProcedureID == "RP-77"
        assert request.RequestedProcedureDescription == "Radiografía de tórax"
        assert request.PlacerOrderNumberImagingServiceRequest == "PLACER-1"
        assert request.FillerOrderNumberImagingServiceRequest == "FILLER-9"
        assert request.RequestedProcedureCodeSequence[0].CodeValue == "RPID1001"
        assert [c.CodeValue for c in ds.PerformedProcedureCodeSequence] == ["RPID1001"]
        path = save(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
        assert_no_warnings_of_ours(path, [source_path])
    # A real DX header with Request Attributes of its own (empty IDs): its accession is kept.
    dx = pydicom.dcmread(dicom_dir / "highdicom_dx_canine_thorax.dcm", stop_before_pixels=True)
    narrative = build_report_objects(make_report([dx]), [dx])[0]
    assert narrative.ReferencedRequestSequence[0].AccessionNumber == dx.AccessionNumber
    # Without Request Attributes there is no request to reference.
    plain = build_report_objects(make_report(rg1_sources), rg1_sources)[0]
    assert "ReferencedRequestSequence" not in plain
    assert plain.PerformedProcedureCodeSequence[0].CodeValue == codes.CHEST_RADIOGRAPH.value


def test_section_headings_are_cid_7001_loinc_codes() -> None:
    heading_codes = {value for name in cid_concepts[7001]["LN"] for value in concepts["LN"][name]}
    element_codes = {
        (scheme, value)
        for scheme, names in cid_concepts[7002].items()
        for name in names
        for value in concepts[scheme][name]
    }
    for section, item in codes.SECTIONS.values():
        assert section.scheme_designator == "LN" and section.value in heading_codes, section
        assert (item.scheme_designator, item.value) in element_codes, item
    assert codes.section_concepts("Hallazgos")[0].value == "59776-5"
    assert codes.section_concepts("Impresión")[0].value == "19005-8"


def test_image_library_modality_is_the_header_modality(siim_sources: list[Dataset]) -> None:
    objects = build_report_objects(make_report(siim_sources), siim_sources)
    sr = objects[1]
    assert siim_sources[0].SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    modalities = [
        item.ConceptCodeSequence[0].CodeValue
        for item in _walk(sr)
        if item.get("ConceptNameCodeSequence")
        and item.ConceptNameCodeSequence[0].CodeValue == "121139"
    ]
    assert modalities == ["CR"]


def _walk(ds: Dataset) -> list[Dataset]:
    items = []
    for item in ds.get("ContentSequence") or []:
        items.append(item)
        items.extend(_walk(item))
    return items


def test_local_scheme_is_declared_only_where_its_codes_are(rg1_sources: list[Dataset]) -> None:
    local = FindingCode("CXR-DEVICES", "99CXR", "Dispositivos médicos")
    source = rg1_sources[0]
    region = Region(str(source.SOPInstanceUID), 10, 300, 200, 600)
    findings = (
        FindingResult("support_devices", local, "present", 0.9, None, region),
        FindingResult("pneumothorax", PNEUMOTHORAX, "absent", 0.1),
    )
    objects = build_report_objects(make_report([source], findings=findings), [source])
    declared = {
        str(ds.SOPClassUID): [
            i.CodingSchemeDesignator for i in ds.get("CodingSchemeIdentificationSequence") or []
        ]
        for ds in objects
    }
    assert declared == {
        BasicTextSRStorage: [],
        Comprehensive3DSRStorage: ["99CXR"],
        GrayscaleSoftcopyPresentationStateStorage: [],
    }
    standard = build_report_objects(make_report([source]), [source])
    assert all("CodingSchemeIdentificationSequence" not in ds for ds in standard)


def test_local_code_values_fit_a_code_value(tmp_path: Path) -> None:
    from engine.artifact import FindingSpec
    from training.findings import FINDINGS

    values = [f.local_code for f in FINDINGS]
    assert len(set(values)) == len(values)
    for finding in FINDINGS:
        assert 0 < len(finding.local_code) <= 16 and finding.local_code != finding.key
        spec = FindingSpec(
            key=finding.key,
            code_value=finding.code_value,
            code_scheme=finding.code_scheme,
            name_es=finding.name_es,
            code_verified=False,
            local_code=finding.local_code,
        )
        assert spec.to_code().value == finding.local_code
    with pytest.raises(ValueError, match="16"):
        FindingCode("enlarged_cardiomediastinum", "99CXR", "Ensanchamiento")


def test_normal_study_is_an_impression_not_a_finding(
    rg1_sources: list[Dataset], tmp_path: Path
) -> None:
    normal = (
        FindingResult("no_finding", NO_FINDING, "present", 0.93),
        FindingResult("pneumothorax", PNEUMOTHORAX, "absent", 0.02),
        FindingResult("cardiomegaly", CARDIOMEGALY, "uncertain", 0.3),
    )
    objects = build_report_objects(make_report(rg1_sources, findings=normal), rg1_sources)
    path = save(objects[1], tmp_path / "normal.dcm")
    content = hd.sr.srread(path).content
    groups = content.get_image_measurement_groups() + content.get_planar_roi_measurement_groups()
    assert sorted(g.finding_type.value for g in groups) == sorted(
        [PNEUMOTHORAX.value, CARDIOMEGALY.value]
    )
    statements = [
        item
        for item in _walk(objects[1])
        if item.ValueType == "CODE" and item.ConceptCodeSequence[0].CodeValue == "281900007"
    ]
    assert len(statements) == 1
    assert statements[0].ConceptNameCodeSequence[0].CodeValue == codes.IMPRESSION.value
    assert "Sin hallazgos patológicos" in dsr2html(path)
    # "No finding" beside a finding present: the finding is reported, no normal statement.
    contradictory = (
        FindingResult("no_finding", NO_FINDING, "present", 0.7),
        FindingResult("pneumothorax", PNEUMOTHORAX, "present", 0.8),
    )
    sr = build_report_objects(make_report(rg1_sources, findings=contradictory), rg1_sources)[1]
    assert not [
        item
        for item in _walk(sr)
        if item.get("ConceptCodeSequence") and item.ConceptCodeSequence[0].CodeValue == "281900007"
    ]
    # Only "no finding" and nothing else: the narrative alone.
    alone = build_report_objects(
        make_report(
            rg1_sources, findings=(FindingResult("no_finding", NO_FINDING, "absent", 0.1),)
        ),
        rg1_sources,
    )
    assert [str(ds.SOPClassUID) for ds in alone] == [BasicTextSRStorage]


def test_reports_say_which_image_was_analysed_and_why(rg1_sources: list[Dataset]) -> None:
    frontal, other = rg1_sources[0], rg1_sources[1]
    report = dataclasses.replace(
        make_report(rg1_sources),
        analysed_images=(
            AnalysedImage(str(frontal.SOPInstanceUID), "frontal", "PA", "ViewPosition PA"),
            AnalysedImage(str(other.SOPInstanceUID), "lateral", "LL", "header"),
        ),
    )
    narrative, measurement = build_report_objects(report, rg1_sources)[:2]
    section = next(
        item
        for item in narrative.ContentSequence
        if item.ValueType == "CONTAINER"
        and item.ConceptNameCodeSequence[0].CodeValue == codes.CURRENT_PROCEDURE.value
    )
    text = section.ContentSequence[0].TextValue
    assert text.startswith("Imágenes analizadas por el algoritmo: imagen frontal (proyección PA)")
    assert str(frontal.SOPInstanceUID) in text and str(other.SOPInstanceUID) in text
    assert "proyección PA según la cabecera DICOM (ViewPosition)" in text
    assert "imagen lateral (proyección LL)" in text
    assert text in [i.get("TextValue") for i in _walk(measurement)]
    # An older engine's report: the first source and extra["view_selection"].
    older = dataclasses.replace(
        make_report(rg1_sources), extra={"view_selection": "ViewPosition PA"}
    )
    narrative = build_report_objects(older, rg1_sources)[0]
    text = [i for i in _walk(narrative) if i.get("TextValue", "").startswith("Imagen analizada")]
    assert len(text) == 1 and str(frontal.SOPInstanceUID) in text[0].TextValue


@pytest.mark.parametrize("source_set", ["rg1_sources", "siim_sources", "dx_sources"])
def test_no_dciodvfy_warning_of_our_making(
    source_set: str, request: pytest.FixtureRequest, dicom_dir: Path, tmp_path: Path
) -> None:
    sources = request.getfixturevalue(source_set)
    names = {
        "rg1_sources": "rg1_*.dcm",
        "siim_sources": "siim_*.dcm",
        "dx_sources": "highdicom_dx_*.dcm",
    }
    source_paths = sorted(dicom_dir.glob(names[source_set]))
    objects = build_report_objects(make_report(sources), sources)
    assert len(objects) == 3
    for i, ds in enumerate(objects):
        assert_no_warnings_of_ours(save(ds, tmp_path / f"{i}.dcm"), source_paths)


def test_highdicom_reads_back_every_measurement_group(
    rg1_sources: list[Dataset], dicom_dir: Path, tmp_path: Path
) -> None:
    from engine.artifact import FindingSpec
    from training.findings import FINDINGS

    source = rg1_sources[0]
    rows, columns = int(source.Rows), int(source.Columns)
    findings = []
    for i, finding in enumerate(FINDINGS):
        spec = FindingSpec(
            key=finding.key,
            code_value=finding.code_value,
            code_scheme=finding.code_scheme,
            name_es=finding.name_es,
            code_verified=finding.code_verified,
            local_code=finding.local_code,
        )
        presence = ("present", "absent", "uncertain")[i % 3]
        region = (
            Region(str(source.SOPInstanceUID), columns * 0.2, rows * 0.2, columns * 0.6, rows * 0.6)
            if finding.locatable and presence != "absent"
            else None
        )
        findings.append(FindingResult(finding.key, spec.to_code(), presence, 0.5, None, region))  # type: ignore[arg-type]
    report = make_report([source], findings=tuple(findings))
    objects = build_report_objects(report, [source])
    path = save(objects[1], tmp_path / "all.dcm")
    assert_no_warnings_of_ours(path, sorted(dicom_dir.glob("rg1_*.dcm")))
    content = hd.sr.srread(path).content
    groups = content.get_image_measurement_groups() + content.get_planar_roi_measurement_groups()
    expected = {(f.code.scheme, f.code.value): f for f in findings if f.key != "no_finding"}
    read = {(g.finding_type.scheme_designator, g.finding_type.value): g for g in groups}
    assert set(read) == set(expected)
    for key, group in read.items():
        finding = expected[key]
        assert group.finding_type.meaning == codes.code_meaning(finding.code.meaning_es)
        evaluation = group.get_qualitative_evaluations()[0]
        assert evaluation.value.value == codes.PRESENCE[finding.presence].value
        assert group.get_measurements()[0].value == pytest.approx(0.5)
    assert "LongCodeValue" not in str(pydicom.dcmread(path))


def test_finding_names_read_as_a_spanish_radiologist_writes() -> None:
    from training.findings import FINDINGS_BY_KEY

    names = {key: f.name_es for key, f in FINDINGS_BY_KEY.items()}
    assert names["support_devices"] == "Dispositivos médicos"
    assert names["enlarged_cardiomediastinum"] == "Ensanchamiento de la silueta cardiomediastínica"
    assert names["elevated_hemidiaphragm"] == "Elevación del hemidiafragma"
    assert names["hypoinflation"] == "Volúmenes pulmonares disminuidos"
    assert names["spondylosis"] == "Cambios degenerativos de la columna dorsal"
    for name in names.values():
        assert name[0].isupper() and not name.endswith("."), name
        for calque in ("de soporte", "hemidiafragmática", "Hipoinsuflación", "cardiomediastínico"):
            assert calque not in name, name


def test_reports_carry_the_engine_image_check(rg1_sources: list[Dataset]) -> None:
    """The image gate's distance, beside the engine's refusal limit, in Spanish decimals."""

    def texts(extra: dict[str, str]) -> list[str]:
        report = dataclasses.replace(make_report(rg1_sources), extra=extra)
        narrative, measurement = build_report_objects(report, rg1_sources)[:2]
        found = [
            str(i.TextValue)
            for ds in (narrative, measurement)
            for i in _walk(ds)
            if str(i.get("TextValue", "")).startswith("Imagen analizada")
        ]
        assert len(found) == 2 and found[0] == found[1]
        return found

    text = texts({"image_gate": "feature distance 24.91 (at most 25.77)"})[0]
    assert text.endswith(
        "Control de la imagen: distancia 24,91 a las radiografías de entrenamiento del "
        "algoritmo (rechaza las imágenes por encima de 25,77)."
    )
    off = texts({"image_gate": "off: the engine artifact has no image statistics"})[0]
    assert off.endswith("Control de la imagen: no aplicado por este motor.")
    assert "Control de la imagen" not in texts({})[0]
