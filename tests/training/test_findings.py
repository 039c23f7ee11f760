"""The unified finding set: complete, coded, with Spanish names."""

from __future__ import annotations

import pytest

from training.findings import (
    CHEXPERT_KEYS,
    FINDINGS,
    FINDINGS_BY_KEY,
    Finding,
    finding_keys,
    get_finding,
)

CHEXPERT_14 = {
    "no_finding",
    "enlarged_cardiomediastinum",
    "cardiomegaly",
    "lung_opacity",
    "lung_lesion",
    "edema",
    "consolidation",
    "pneumonia",
    "atelectasis",
    "pneumothorax",
    "pleural_effusion",
    "pleural_other",
    "fracture",
    "support_devices",
}
NIH_EXTRA = {
    "infiltration",
    "mass",
    "nodule",
    "emphysema",
    "fibrosis",
    "pleural_thickening",
    "hernia",
}


def test_covers_chexpert_and_nih() -> None:
    assert set(CHEXPERT_KEYS) == CHEXPERT_14
    assert set(finding_keys()) >= NIH_EXTRA
    assert finding_keys()[0] == "no_finding"
    assert len(FINDINGS_BY_KEY) == len(FINDINGS)


def test_codes_and_spanish_names() -> None:
    assert FINDINGS_BY_KEY["pleural_effusion"].code_value == "60046008"
    assert FINDINGS_BY_KEY["pleural_effusion"].name_es == "Derrame pleural"
    assert FINDINGS_BY_KEY["pneumothorax"].name_es == "Neumotórax"
    assert FINDINGS_BY_KEY["pneumonia"].name_es == "Neumonía"
    for f in FINDINGS:
        assert f.code_scheme in ("SCT", "RADLEX")
    assert not FINDINGS_BY_KEY["no_finding"].locatable
    assert FINDINGS_BY_KEY["nodule"].locatable


def test_validation_and_lookup() -> None:
    with pytest.raises(ValueError, match="code_scheme"):
        Finding("x", "X", "X", "1", "LOINC", False, False)
    with pytest.raises(ValueError, match="snake_case"):
        Finding("Bad Key", "X", "X", "1", "SCT", False, False)
    with pytest.raises(KeyError, match="known keys"):
        get_finding("not_a_finding")
    assert get_finding("nodule").code_value == "786838002"


def test_codes_that_dicom_knows_mean_the_same_thing_there() -> None:
    # pydicom ships DICOM's code tables: a SNOMED CT id found there must name the same concept
    # (this caught lung_lesion coded as "exercise-induced angina").
    from pydicom.sr._concepts_dict import concepts

    known = {code: meaning for d in concepts["SCT"].values() for code, (meaning, _) in d.items()}

    def stems(text: str) -> set[str]:
        return {w[:4] for w in text.lower().replace("(", " ").split() if len(w) > 3}

    checked = 0
    for finding in FINDINGS:
        meaning = known.get(finding.code_value) if finding.code_scheme == "SCT" else None
        if meaning is None:
            continue
        checked += 1
        assert stems(meaning) & stems(finding.name_en), (finding.key, finding.code_value, meaning)
    assert checked >= 4
