"""Sample engine results over the real source images, shared by the report tests."""

from __future__ import annotations

from pydicom import Dataset

from engine.result import EngineIdentity, FindingCode, FindingResult, Region, StudyReport

ENGINE = EngineIdentity(name="cxr-borrador", version="1.4.2", sha256="ab" * 32)
OTHER_ENGINE = EngineIdentity(name="cxr-borrador", version="1.4.3", sha256="cd" * 32)

SECTIONS = (
    (
        "Hallazgos",
        "Neumotórax apical izquierdo de pequeño tamaño. Señal de derrame pleural: no se "
        "observa. Silueta cardíaca de tamaño normal para la proyección.",
    ),
    ("Impresión", "Neumotórax izquierdo; correlación clínica. Niño, España, ñandú: ÁÉÍÓÚÜÑ."),
)

PNEUMOTHORAX = FindingCode("36118008", "SCT", "Neumotórax", "Pneumothorax")
EFFUSION = FindingCode("60046008", "SCT", "Derrame pleural", "Pleural effusion")
CARDIOMEGALY = FindingCode("8186001", "SCT", "Cardiomegalia", "Cardiomegaly")
NODULE = FindingCode("RID3875", "RADLEX", "Nódulo pulmonar", "Pulmonary nodule")
LOCAL = FindingCode("CXR-DEVICES", "99CXR", "Dispositivos médicos", "Support devices")


def make_report(
    sources: list[Dataset],
    *,
    engine: EngineIdentity = ENGINE,
    located: bool = True,
    findings: tuple[FindingResult, ...] | None = None,
) -> StudyReport:
    """A report over ``sources`` with a located, an absent and an uncertain finding."""
    first = sources[0]
    rows, columns = int(first.Rows), int(first.Columns)
    region = (
        Region(str(first.SOPInstanceUID), columns * 0.55, rows * 0.1, columns * 0.9, rows * 0.45)
        if located
        else None
    )
    if findings is None:
        findings = (
            FindingResult("pneumothorax", PNEUMOTHORAX, "present", 0.87, "left", region),
            FindingResult("pleural_effusion", EFFUSION, "absent", 0.04),
            FindingResult("cardiomegaly", CARDIOMEGALY, "uncertain", 0.48, None),
            FindingResult("nodule", NODULE, "uncertain", 0.31, "bilateral"),
        )
    return StudyReport(
        study_instance_uid=str(first.StudyInstanceUID),
        source_sop_instance_uids=tuple(dict.fromkeys(str(s.SOPInstanceUID) for s in sources)),
        findings=findings,
        sections=SECTIONS,
        engine=engine,
    )
