"""The unified finding set: what every dataset, the labeler, the model and the report speak of.

One ordered tuple, :data:`FINDINGS`, is the model's output order and the vocabulary of the
clinical metrics. It covers the 14 CheXpert observations (Irvin et al. 2019), the other NIH
ChestX-ray14 labels (Wang et al. 2017) and the findings that the IU X-Ray MeSH annotations and
the PadChest label set name most often. How each dataset's labels map onto these keys lives in
:mod:`training.label_maps`.

Each finding carries a code for the DICOM Structured Report: a SNOMED CT concept id (scheme
``"SCT"``) where one fits. Codes were checked against SNOMED CT browser pages and public
terminology tables where those could be found here; ``code_verified`` is ``False`` for the codes
that could not be confirmed from an authoritative source in this environment and must be checked
in a SNOMED CT browser before the node is used clinically:

- ``enlarged_cardiomediastinum`` 274096000 (mediastinal widening)
- ``lung_opacity`` 263930000 (opacity of lung)
- ``lung_lesion`` 308689002 (coin lesion of lung, from DICOM's code tables; whether it is
  the right concept for CheXpert's broader "lung lesion" is unconfirmed. The first choice,
  300995000, is "exercise-induced angina" there: wrong, replaced)
- ``support_devices`` 49062001 (device)
- ``pleural_thickening`` 78381009 (pleural thickening)
- ``hyperinflation`` 19311004 (hyperinflation of lung)
- ``hypoinflation`` 249683004 (low lung volumes)
- ``granuloma`` 45647009 (granuloma)
- ``calcification`` 82650004 (calcinosis)
- ``kyphosis`` 414564002 (kyphosis deformity of spine)
- ``spondylosis`` 75320002 (spondylosis)
- ``aortic_elongation`` 433021000 (tortuous aorta)
- ``aortic_atheromatosis`` 54160000 (atherosclerosis of aorta)
- ``elevated_hemidiaphragm`` 95417006 (elevation of diaphragm)
- ``scarring`` 12402003 (scar)
- ``tuberculosis`` 154283005 (pulmonary tuberculosis)

Confirmed: no abnormality detected 281900007, cardiomegaly 8186001, pulmonary edema 19242006,
consolidation of lung 95436008, pneumonia 233604007, atelectasis 46621007, pneumothorax
36118008, pleural effusion 60046008, fracture of bone 125605004, radiologic infiltrate of lung
409609008, mass of lung 126713003, nodule of lung 786838002, pulmonary emphysema 87433001,
fibrosis of lung 51615001, hiatal hernia 84089009, scoliosis deformity of spine 298382003,
bronchiectasis 12295008, interstitial lung disease 233703007, pleura finding 301256004
(the generic pleural finding, used for "other pleural abnormality").

DICOM's own code tables (as shipped in pydicom) give Cardiomegaly as 287272002; which of the
two concepts a PACS expects is for the clinical pilot to confirm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

CODE_SCHEMES: tuple[str, ...] = ("SCT", "RADLEX")

#: What a report or a label file says about one finding (the same values as engine.result).
Presence = Literal["present", "absent", "uncertain"]
PRESENCE_VALUES: tuple[str, ...] = ("present", "absent", "uncertain")


#: Code Value (0008,0100) is SH: 16 characters. Longer values go to Long Code Value, which
#: many PACS and RIS readers ignore.
LOCAL_CODE_MAX = 16
LOCAL_CODE_PREFIX = "CXR-"

#: Local code values for the keys whose ``CXR-<KEY>`` would exceed 16 characters.
_ABBREVIATED_LOCAL_CODES: dict[str, str] = {
    "enlarged_cardiomediastinum": "CXR-ENLCARDMED",
    "pleural_thickening": "CXR-PLEURTHICK",
    "aortic_elongation": "CXR-AORTELONG",
    "aortic_atheromatosis": "CXR-AORTATHERO",
    "elevated_hemidiaphragm": "CXR-ELEVHEMIDIA",
    "interstitial_pattern": "CXR-INTERSTIT",
    "support_devices": "CXR-DEVICES",
    "pleural_effusion": "CXR-PLEUREFF",
    "hyperinflation": "CXR-HYPERINFL",
    "hypoinflation": "CXR-HYPOINFL",
    "bronchiectasis": "CXR-BRONCHIECT",
    "consolidation": "CXR-CONSOLID",
    "calcification": "CXR-CALCIF",
}


def local_code_for(key: str) -> str:
    """The ``99CXR`` code value of a finding key: ``CXR-`` and the key in capitals without
    underscores, or its registered abbreviation where that would exceed 16 characters."""
    return _ABBREVIATED_LOCAL_CODES.get(key, LOCAL_CODE_PREFIX + key.upper().replace("_", ""))


@dataclass(frozen=True)
class Finding:
    """One radiological finding of the unified set, with its code and its Spanish name."""

    key: str
    name_en: str
    name_es: str
    code_value: str
    code_scheme: str
    chexpert: bool
    locatable: bool
    code_verified: bool = True
    #: The code value in the node's local scheme ``99CXR``, used while the standard code is
    #: unconfirmed: at most 16 characters (DICOM Code Value, SH) so that every reader sees it
    #: as a plain Code Value, never as a Long Code Value. Derived from the key when empty.
    local_code: str = ""

    def __post_init__(self) -> None:
        if not self.local_code:
            object.__setattr__(self, "local_code", local_code_for(self.key))
        if len(self.local_code) > LOCAL_CODE_MAX or self.local_code == self.key:
            raise ValueError(
                f"Finding {self.key!r}: local_code {self.local_code!r} must be at most "
                f"{LOCAL_CODE_MAX} characters and differ from the key"
            )
        if not self.key or not self.key.replace("_", "").isalnum() or self.key.lower() != self.key:
            raise ValueError(f"Finding.key must be a snake_case identifier, got {self.key!r}")
        if not self.name_en or not self.name_es:
            raise ValueError(f"Finding {self.key!r}: name_en and name_es must not be empty")
        if self.code_scheme not in CODE_SCHEMES:
            raise ValueError(
                f"Finding {self.key!r}: code_scheme must be one of {CODE_SCHEMES}, "
                f"got {self.code_scheme!r}"
            )
        if self.code_scheme == "SCT" and not self.code_value.isdigit():
            raise ValueError(f"Finding {self.key!r}: a SNOMED CT code_value is all digits")
        if self.code_scheme == "RADLEX" and not self.code_value.startswith("RID"):
            raise ValueError(f"Finding {self.key!r}: a RadLex code_value starts with 'RID'")


def _f(
    key: str,
    name_en: str,
    name_es: str,
    sct: str,
    *,
    chexpert: bool = False,
    locatable: bool = True,
    verified: bool = True,
) -> Finding:
    return Finding(key, name_en, name_es, sct, "SCT", chexpert, locatable, verified)


FINDINGS: tuple[Finding, ...] = (
    # The 14 CheXpert observations, in CheXpert's own order.
    _f("no_finding", "No finding", "Sin hallazgos patológicos", "281900007",
       chexpert=True, locatable=False),
    _f("enlarged_cardiomediastinum", "Enlarged cardiomediastinum",
       "Ensanchamiento de la silueta cardiomediastínica", "274096000",
       chexpert=True, verified=False),
    _f("cardiomegaly", "Cardiomegaly", "Cardiomegalia", "8186001", chexpert=True),
    _f("lung_opacity", "Lung opacity", "Opacidad pulmonar", "263930000",
       chexpert=True, verified=False),
    _f("lung_lesion", "Lung lesion", "Lesión pulmonar", "308689002",
       chexpert=True, verified=False),
    _f("edema", "Pulmonary edema", "Edema pulmonar", "19242006", chexpert=True,
       locatable=False),
    _f("consolidation", "Consolidation", "Consolidación", "95436008", chexpert=True),
    _f("pneumonia", "Pneumonia", "Neumonía", "233604007", chexpert=True),
    _f("atelectasis", "Atelectasis", "Atelectasia", "46621007", chexpert=True),
    _f("pneumothorax", "Pneumothorax", "Neumotórax", "36118008", chexpert=True),
    _f("pleural_effusion", "Pleural effusion", "Derrame pleural", "60046008", chexpert=True),
    _f("pleural_other", "Other pleural abnormality", "Otra alteración pleural", "301256004",
       chexpert=True),
    _f("fracture", "Fracture", "Fractura", "125605004", chexpert=True),
    _f("support_devices", "Support devices", "Dispositivos médicos", "49062001",
       chexpert=True, verified=False),
    # The other NIH ChestX-ray14 labels.
    _f("infiltration", "Infiltration", "Infiltrado pulmonar", "409609008"),
    _f("mass", "Lung mass", "Masa pulmonar", "126713003"),
    _f("nodule", "Lung nodule", "Nódulo pulmonar", "786838002"),
    _f("emphysema", "Emphysema", "Enfisema pulmonar", "87433001", locatable=False),
    _f("fibrosis", "Pulmonary fibrosis", "Fibrosis pulmonar", "51615001"),
    _f("pleural_thickening", "Pleural thickening", "Engrosamiento pleural", "78381009",
       verified=False),
    _f("hernia", "Hiatal hernia", "Hernia de hiato", "84089009"),
    # Frequent in IU X-Ray MeSH annotations and PadChest labels.
    _f("hyperinflation", "Hyperinflation", "Hiperinsuflación pulmonar", "19311004",
       locatable=False, verified=False),
    _f("hypoinflation", "Low lung volumes", "Volúmenes pulmonares disminuidos", "249683004",
       locatable=False, verified=False),
    _f("granuloma", "Granuloma", "Granuloma", "45647009", verified=False),
    _f("calcification", "Calcification", "Calcificación", "82650004", verified=False),
    _f("scoliosis", "Scoliosis", "Escoliosis", "298382003", locatable=False),
    _f("kyphosis", "Kyphosis", "Cifosis", "414564002", locatable=False, verified=False),
    _f("spondylosis", "Degenerative spine changes", "Cambios degenerativos de la columna dorsal",
       "75320002", verified=False),
    _f("aortic_elongation", "Tortuous or elongated aorta", "Elongación aórtica", "433021000",
       verified=False),
    _f("aortic_atheromatosis", "Aortic atherosclerosis", "Ateromatosis aórtica", "54160000",
       verified=False),
    _f("elevated_hemidiaphragm", "Elevated hemidiaphragm", "Elevación del hemidiafragma",
       "95417006", verified=False),
    _f("scarring", "Scarring", "Cambios cicatriciales", "12402003", verified=False),
    _f("bronchiectasis", "Bronchiectasis", "Bronquiectasias", "12295008"),
    _f("interstitial_pattern", "Interstitial pattern", "Patrón intersticial", "233703007",
       locatable=False),
    _f("tuberculosis", "Tuberculosis", "Tuberculosis", "154283005", verified=False),
)

FINDINGS_BY_KEY: dict[str, Finding] = {f.key: f for f in FINDINGS}

CHEXPERT_KEYS: tuple[str, ...] = tuple(f.key for f in FINDINGS if f.chexpert)

if len(FINDINGS_BY_KEY) != len(FINDINGS):  # pragma: no cover - guards edits to the table
    raise RuntimeError("training.findings.FINDINGS holds a duplicate key")
if len({f.local_code for f in FINDINGS}) != len(FINDINGS):  # pragma: no cover - same
    raise RuntimeError("training.findings.FINDINGS holds a duplicate local code")


def finding_keys() -> tuple[str, ...]:
    """The finding keys in the model's output order."""
    return tuple(f.key for f in FINDINGS)


def get_finding(key: str) -> Finding:
    """The finding named ``key``; raises ``KeyError`` naming the known keys otherwise."""
    try:
        return FINDINGS_BY_KEY[key]
    except KeyError:
        raise KeyError(
            f"unknown finding key {key!r}; known keys: {', '.join(finding_keys())}"
        ) from None
