"""The report objects judged by real tools: dciodvfy, dsr2html, pydicom and highdicom."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import (
    BasicTextSRStorage,
    Comprehensive3DSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
)

from dicomnode.exceptions import ReportObjectError
from dicomnode.report import DISCLAIMER_ES, build_report_objects
from dicomnode.uids import is_valid_uid
from engine.result import FindingCode, FindingResult, Region
from tests.report.report_samples import (
    CARDIOMEGALY,
    EFFUSION,
    ENGINE,
    LOCAL,
    OTHER_ENGINE,
    PNEUMOTHORAX,
    make_report,
)
from tests.support.dicom_peers import dciodvfy_errors, dsr2html


def save_all(objects: list[Dataset], directory: Path) -> list[Path]:
    paths = []
    for i, ds in enumerate(objects):
        path = directory / f"{i:02d}_{ds.Modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def by_class(objects: list[Dataset], sop_class: str) -> list[Dataset]:
    return [ds for ds in objects if ds.SOPClassUID == sop_class]


@pytest.mark.parametrize("source_set", ["rg1_sources", "siim_sources", "dx_sources"])
def test_every_object_passes_dciodvfy(
    source_set: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    sources = request.getfixturevalue(source_set)
    objects = build_report_objects(make_report(sources), sources)
    classes = sorted(str(ds.SOPClassUID) for ds in objects)
    assert classes == sorted(
        [BasicTextSRStorage, Comprehensive3DSRStorage, GrayscaleSoftcopyPresentationStateStorage]
    )
    for path in save_all(objects, tmp_path):
        errors, output = dciodvfy_errors(path)
        assert not errors, f"dciodvfy {path.name}:\n{output}"


def test_objects_without_findings_or_regions_pass_dciodvfy(
    rg1_sources: list[Dataset], tmp_path: Path
) -> None:
    no_findings = build_report_objects(make_report(rg1_sources, findings=()), rg1_sources)
    assert [ds.SOPClassUID for ds in no_findings] == [BasicTextSRStorage]
    unlocated = build_report_objects(make_report(rg1_sources, located=False), rg1_sources)
    assert sorted(ds.SOPClassUID for ds in unlocated) == sorted(
        [BasicTextSRStorage, Comprehensive3DSRStorage]
    )
    local = build_report_objects(
        make_report(
            rg1_sources, findings=(FindingResult("support_devices", LOCAL, "present", 0.9),)
        ),
        rg1_sources,
    )
    scheme = local[1].CodingSchemeIdentificationSequence[0]
    assert scheme.CodingSchemeDesignator == "99CXR"
    for path in save_all(no_findings + unlocated + local, tmp_path):
        errors, output = dciodvfy_errors(path)
        assert not errors, f"dciodvfy {path.name}:\n{output}"


def test_long_titles_and_meanings_fit_their_vr(rg1_sources: list[Dataset], tmp_path: Path) -> None:
    long_code = FindingCode("RID5352", "RADLEX", "Opacidad " + "muy " * 30 + "extensa")
    report = dataclasses.replace(
        make_report(rg1_sources, findings=(FindingResult("x", long_code, "present", 0.7),)),
        sections=(("Sección con un título muy largo " * 4, "Texto de la sección."),),
    )
    objects = build_report_objects(report, rg1_sources)
    group = hd.sr.srread(save_all(objects[1:2], tmp_path)[0]).content
    finding_type = group.get_image_measurement_groups()[0].finding_type
    assert finding_type.meaning.startswith("Opacidad muy")
    assert len(finding_type.meaning.encode("utf-8")) <= 64
    section = [i for i in objects[0].ContentSequence if i.ValueType == "CONTAINER"][-1]
    title = section.ConceptNameCodeSequence[0].CodeMeaning
    assert title.startswith("Sección con un título") and title.endswith("…")
    assert 60 <= len(title.encode("utf-8")) <= 64
    for path in save_all(objects, tmp_path):
        errors, output = dciodvfy_errors(path)
        assert not errors, f"dciodvfy {path.name}:\n{output}"


def test_header_is_a_draft_in_the_source_study(rg1_sources: list[Dataset]) -> None:
    objects = build_report_objects(make_report(rg1_sources), rg1_sources)
    source_series = {s.SeriesInstanceUID for s in rg1_sources}
    source_uids = {s.SOPInstanceUID for s in rg1_sources}
    for ds in objects:
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert ds.StudyInstanceUID == rg1_sources[0].StudyInstanceUID
        assert ds.PatientID == rg1_sources[0].PatientID
        assert ds.PatientName == rg1_sources[0].PatientName
        assert ds.AccessionNumber == rg1_sources[0].AccessionNumber
        assert ds.SeriesInstanceUID not in source_series
        equipment = ds.ContributingEquipmentSequence
        engine_items = [e for e in equipment if e.ManufacturerModelName == ENGINE.name]
        assert len(engine_items) == 1
        assert list(engine_items[0].SoftwareVersions) == [ENGINE.version, ENGINE.sha256]
        assert engine_items[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
        assert ENGINE.sha256 in ds.SoftwareVersions
    for sr in by_class(objects, BasicTextSRStorage) + by_class(objects, Comprehensive3DSRStorage):
        assert sr.Modality == "SR"
        assert sr.CompletionFlag == "PARTIAL"
        assert sr.VerificationFlag == "UNVERIFIED"
        assert sr.PreliminaryFlag == "PRELIMINARY"
        assert "VerifyingObserverSequence" not in sr
        evidence = sr.CurrentRequestedProcedureEvidenceSequence
        referenced = {
            item.ReferencedSOPInstanceUID
            for study in evidence
            for series in study.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        }
        assert referenced == source_uids
        language = sr.ContentSequence[0]
        assert language.ConceptNameCodeSequence[0].CodeValue == "121049"
        assert language.ConceptCodeSequence[0].CodeValue == "es"
    sr_series = {ds.SeriesInstanceUID for ds in objects if ds.Modality == "SR"}
    pr_series = {ds.SeriesInstanceUID for ds in objects if ds.Modality == "PR"}
    assert len(sr_series) == 1 and len(pr_series) == 1 and sr_series != pr_series


def test_narrative_starts_with_the_disclaimer(rg1_sources: list[Dataset]) -> None:
    narrative = build_report_objects(make_report(rg1_sources), rg1_sources)[0]
    assert narrative.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    contained = [i for i in narrative.ContentSequence if i.RelationshipType == "CONTAINS"]
    first = contained[0]
    assert first.ValueType == "TEXT" and first.TextValue.startswith(DISCLAIMER_ES)
    assert ENGINE.sha256 in first.TextValue
    sections = [i for i in narrative.ContentSequence if i.ValueType == "CONTAINER"]
    assert [s.ConceptNameCodeSequence[0].CodeMeaning for s in sections] == [
        "Descripción del procedimiento",
        "Hallazgos",
        "Impresión",
    ]
    # CID 7001 headings are LOINC codes.
    headings = [s.ConceptNameCodeSequence[0] for s in sections]
    assert [(h.CodeValue, h.CodingSchemeDesignator) for h in headings] == [
        ("55111-9", "LN"),
        ("59776-5", "LN"),
        ("19005-8", "LN"),
    ]
    assert "Neumotórax apical" in sections[1].ContentSequence[0].TextValue


def test_spanish_text_survives_a_file_round_trip(
    rg1_sources: list[Dataset], tmp_path: Path
) -> None:
    objects = build_report_objects(make_report(rg1_sources), rg1_sources)
    for path in save_all(objects, tmp_path):
        raw = path.read_bytes()
        assert "ÁÉÍÓÚÜÑ".encode() in raw or path.name.endswith("PR.dcm")
        ds = pydicom.dcmread(path)
        assert ds.SpecificCharacterSet == "ISO_IR 192"
    narrative = pydicom.dcmread(tmp_path / "00_SR.dcm")
    impression = narrative.ContentSequence[-1].ContentSequence[0].TextValue
    assert impression.endswith("Niño, España, ñandú: ÁÉÍÓÚÜÑ.")


def test_measurement_report_round_trips_through_highdicom(
    rg1_sources: list[Dataset], tmp_path: Path
) -> None:
    report = make_report(rg1_sources)
    objects = build_report_objects(report, rg1_sources)
    path = save_all(objects, tmp_path)[1]
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    content = sr.content
    assert isinstance(content, hd.sr.MeasurementReport)

    located = content.get_planar_roi_measurement_groups()
    assert len(located) == 1
    group = located[0]
    assert group.finding_type == hd.sr.CodedConcept("36118008", "SCT", "Neumotórax")
    assert group.finding_type.meaning == "Neumotórax"
    region = group.roi
    assert region is not None
    assert region.value_type == hd.sr.ValueTypeValues.SCOORD
    box = report.findings[0].region
    assert box is not None
    expected = np.array(
        [
            [box.x_min, box.y_min],
            [box.x_max, box.y_min],
            [box.x_max, box.y_max],
            [box.x_min, box.y_max],
            [box.x_min, box.y_min],
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(region.value, expected, rtol=1e-6)
    ref = region.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == box.sop_instance_uid
    evaluation = group.get_qualitative_evaluations()[0]
    assert evaluation.name.value == "36118008"
    assert evaluation.value == hd.sr.CodedConcept("52101004", "SCT", "Presente")
    probability = group.get_measurements()[0]
    assert probability.name.value == "122157"
    assert probability.value == pytest.approx(0.87)
    assert probability.unit.value == "1"
    sites = group.finding_sites
    assert len(sites) == 1
    laterality = sites[0].ContentSequence[0]
    assert laterality.ConceptCodeSequence[0].CodeValue == "7771000"

    unlocated = content.get_image_measurement_groups()
    by_type = {g.finding_type.value: g for g in unlocated}
    assert set(by_type) == {EFFUSION.value, CARDIOMEGALY.value, "RID3875"}
    absent = by_type[EFFUSION.value].get_qualitative_evaluations()[0].value
    assert absent.value == "272519000" and absent.meaning == "Ausente"
    uncertain = by_type[CARDIOMEGALY.value].get_qualitative_evaluations()[0].value
    assert uncertain.value == "373068000" and uncertain.meaning == "Indeterminado"
    assert by_type[CARDIOMEGALY.value].finding_sites == []
    nodule = by_type["RID3875"]
    assert nodule.finding_type.scheme_designator == "RADLEX"
    assert nodule.finding_sites[0].ContentSequence[0].ConceptCodeSequence[0].CodeValue == (
        "51440002"
    )

    # TID 4019 algorithm identification on each probability measurement.
    algorithm = [
        item
        for item in probability[0].ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue in ("111001", "111003", "111002")
    ]
    values = {item.ConceptNameCodeSequence[0].CodeValue: item.TextValue for item in algorithm}
    assert values == {
        "111001": ENGINE.name,
        "111003": ENGINE.version,
        "111002": f"sha256={ENGINE.sha256}",
    }


def test_dsr2html_renders_spanish_text(rg1_sources: list[Dataset], tmp_path: Path) -> None:
    objects = build_report_objects(make_report(rg1_sources), rg1_sources)
    paths = save_all(objects, tmp_path)
    for path in paths[:2]:
        html = dsr2html(path)
        assert "BORRADOR PRELIMINAR GENERADO AUTOMÁTICAMENTE" in html
        assert "revisado y validado por un radiólogo" in html
        assert "Neumotórax apical izquierdo de pequeño tamaño" in html
        assert "Niño, España, ñandú: ÁÉÍÓÚÜÑ." in html
        assert "Español" in html
    narrative_html = dsr2html(paths[0])
    assert "Informe de diagnóstico por imagen" in narrative_html
    assert "Hallazgos" in narrative_html and "Impresión" in narrative_html
    measurement_html = dsr2html(paths[1])
    for text in ("Neumotórax", "Presente", "Ausente", "Indeterminado", "Izquierdo", "Tórax"):
        assert text in measurement_html, text


def test_presentation_state_outlines_located_findings(
    rg1_sources: list[Dataset], tmp_path: Path
) -> None:
    report = make_report(rg1_sources)
    objects = build_report_objects(report, rg1_sources)
    (pr,) = by_class(objects, GrayscaleSoftcopyPresentationStateStorage)
    box = report.findings[0].region
    assert box is not None
    ref = pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == box.sop_instance_uid
    annotation = pr.GraphicAnnotationSequence[0]
    graphic = annotation.GraphicObjectSequence[0]
    assert graphic.GraphicType == "POLYLINE" and graphic.GraphicAnnotationUnits == "PIXEL"
    points = np.array(graphic.GraphicData, dtype=float).reshape(-1, 2)
    assert points[0].tolist() == pytest.approx([box.x_min, box.y_min])
    assert points[2].tolist() == pytest.approx([box.x_max, box.y_max])
    texts = [t.UnformattedTextValue for t in annotation.TextObjectSequence]
    assert texts[0].startswith("BORRADOR IA")
    assert "Neumotórax en hemitórax izquierdo (prob. 0,87)" in texts
    saved = pydicom.dcmread(save_all([pr], tmp_path)[0])
    saved_texts = [
        t.UnformattedTextValue for t in saved.GraphicAnnotationSequence[0].TextObjectSequence
    ]
    assert "Neumotórax en hemitórax izquierdo (prob. 0,87)" in saved_texts


def test_presentation_state_can_be_turned_off(rg1_sources: list[Dataset]) -> None:
    objects = build_report_objects(
        make_report(rg1_sources), rg1_sources, with_presentation_state=False
    )
    assert not by_class(objects, GrayscaleSoftcopyPresentationStateStorage)


def test_uids_are_deterministic(rg1_sources: list[Dataset]) -> None:
    first = build_report_objects(make_report(rg1_sources), rg1_sources)
    again = build_report_objects(make_report(rg1_sources), list(reversed(rg1_sources)))
    base = make_report(rg1_sources)
    reordered = dataclasses.replace(
        base, source_sop_instance_uids=tuple(reversed(base.source_sop_instance_uids))
    )
    third = build_report_objects(reordered, rg1_sources)
    uids = [(ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in first]
    assert uids == [(ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in again]
    assert uids == [(ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in third]
    assert len({sop for _, sop in uids}) == len(uids)
    assert all(is_valid_uid(u) for pair in uids for u in pair)

    other = build_report_objects(make_report(rg1_sources, engine=OTHER_ENGINE), rg1_sources)
    other_uids = {ds.SOPInstanceUID for ds in other} | {ds.SeriesInstanceUID for ds in other}
    assert other_uids.isdisjoint({u for pair in uids for u in pair})

    subset = build_report_objects(make_report(rg1_sources[:2]), rg1_sources[:2])
    assert {ds.SOPInstanceUID for ds in subset}.isdisjoint({sop for _, sop in uids})


def test_duplicate_sources_are_referenced_once(siim_sources: list[Dataset]) -> None:
    assert siim_sources[0].SOPInstanceUID == siim_sources[1].SOPInstanceUID
    narrative = build_report_objects(make_report(siim_sources), siim_sources)[0]
    series = narrative.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert len(series[0].ReferencedSOPSequence) == 1


def test_inconsistent_inputs_are_refused(
    rg1_sources: list[Dataset], dx_sources: list[Dataset]
) -> None:
    report = make_report(rg1_sources)
    with pytest.raises(ReportObjectError, match="belongs to study"):
        build_report_objects(report, [*rg1_sources, *dx_sources])
    with pytest.raises(ReportObjectError, match="headers were not passed"):
        build_report_objects(report, rg1_sources[:1])
    columns = int(rg1_sources[0].Columns)
    outside = FindingResult(
        "pneumothorax",
        PNEUMOTHORAX,
        "present",
        0.9,
        region=Region(str(rg1_sources[0].SOPInstanceUID), 10, 10, columns + 50, 100),
    )
    with pytest.raises(ReportObjectError, match="outside image"):
        build_report_objects(make_report(rg1_sources, findings=(outside,)), rg1_sources)
    foreign = FindingResult(
        "pneumothorax",
        PNEUMOTHORAX,
        "present",
        0.9,
        region=Region(str(dx_sources[0].SOPInstanceUID), 1, 1, 5, 5),
    )
    with pytest.raises(ReportObjectError, match="not one of the report's source images"):
        build_report_objects(make_report(rg1_sources, findings=(foreign,)), rg1_sources)
    with pytest.raises(ReportObjectError, match="Spanish"):
        build_report_objects(dataclasses.replace(report, language="en"), rg1_sources)
    with pytest.raises(TypeError, match="with_presentation_state"):
        build_report_objects(report, rg1_sources, with_presentation_state="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="root"):
        build_report_objects(report, rg1_sources, uid_root="1.2.3")
