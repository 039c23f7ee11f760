"""How each dataset's own labels map onto the unified finding set of :mod:`training.findings`.

Tables, not logic, so that a reviewer can read every decision:

- :data:`NIH_TO_KEY`: the 14 ChestX-ray14 labels (``Data_Entry_2017*.csv`` ``Finding Labels``,
  ``BBox_List_2017.csv`` ``Finding Label``) and ``No Finding``.
- :data:`CHEXPERT_TO_KEY`: the 14 CheXpert observations as spelled in the CheXpert, MIMIC-CXR-JPG
  (``mimic-cxr-2.0.0-chexpert.csv``) and CheXpert Plus label files.
- :data:`MESH_HEAD_TO_KEY` and :data:`MESH_QUALIFIED_TO_KEY`: the IU X-Ray manual MeSH
  annotations (``<MeSH><major>Head/qualifier/...</major>``). A term maps through its head
  unless a (head, qualifier) rule matches first; heads mapped to ``None`` were considered and
  deliberately left out (not in the finding set, or too vague such as ``Lung`` alone).
- :data:`PADCHEST_TO_KEY`: the PadChest radiological labels (``Labels`` column, lower case, as
  in PadChest and PadChest-GR), reviewed against PadChest's full label list (Bustos et al.
  2020). Left out on purpose: diagnoses and signs without a finding of their own (COPD signs,
  vascular redistribution, pulmonary hypertension, adenopathy, chronic changes), extrathoracic
  and bone findings other than fractures, and "surgery" subtypes that are not devices
  (mastectomy). PadChest's "hydropneumothorax" maps to pneumothorax only (one key per label).

Choices worth knowing: blunting of the costophrenic angle counts as pleural effusion (its most
common cause, as the CheXpert labeler treats it) unless the report itself denies an effusion
(:data:`MESH_SIGN_TO_KEY`); pulmonary congestion and heart failure count as edema (as in
CheXpert); volume loss counts as atelectasis; sternotomy wires, clips, sutures, lines, tubes,
pacemakers and surgical fusion all count as support devices; degenerative and arthritic changes
of the spine count as spondylosis; calcification of the aorta counts as aortic atheromatosis
(the project's convention, as PadChest labels it), not as calcification; hydropneumothorax is
both a pneumothorax and an effusion (hemothorax an effusion); a round opacity of the lung is a
nodule.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from training.findings import FINDINGS_BY_KEY

logger = logging.getLogger(__name__)

NIH_TO_KEY: dict[str, str] = {
    "No Finding": "no_finding",
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Effusion": "pleural_effusion",
    "Infiltration": "infiltration",
    "Infiltrate": "infiltration",  # spelling used in BBox_List_2017.csv
    "Mass": "mass",
    "Nodule": "nodule",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Emphysema": "emphysema",
    "Fibrosis": "fibrosis",
    "Pleural_Thickening": "pleural_thickening",
    "Hernia": "hernia",
}

#: The 14 labels that every ChestX-ray14 image is annotated for (absent unless listed).
NIH_LABELS: tuple[str, ...] = tuple(k for k in NIH_TO_KEY if k not in ("No Finding", "Infiltrate"))

CHEXPERT_TO_KEY: dict[str, str] = {
    "No Finding": "no_finding",
    "Enlarged Cardiomediastinum": "enlarged_cardiomediastinum",
    "Cardiomegaly": "cardiomegaly",
    "Lung Opacity": "lung_opacity",
    "Lung Lesion": "lung_lesion",
    "Edema": "edema",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural_effusion",
    "Pleural Other": "pleural_other",
    "Fracture": "fracture",
    "Support Devices": "support_devices",
}

MESH_HEAD_TO_KEY: dict[str, str | tuple[str, ...] | None] = {
    "normal": "no_finding",
    "Cardiomegaly": "cardiomegaly",
    "Pulmonary Atelectasis": "atelectasis",
    "Atelectasis": "atelectasis",
    "Volume Loss": "atelectasis",
    "Opacity": "lung_opacity",
    "Density": "lung_opacity",
    "Airspace Disease": "lung_opacity",
    "Infiltrate": "infiltration",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Pleural Effusion": "pleural_effusion",
    "Pneumothorax": "pneumothorax",
    "Hydropneumothorax": ("pneumothorax", "pleural_effusion"),
    "Hemopneumothorax": ("pneumothorax", "pleural_effusion"),
    "Hemothorax": "pleural_effusion",
    "Pulmonary Edema": "edema",
    "Pulmonary Congestion": "edema",
    "Nodule": "nodule",
    "Mass": "mass",
    "Emphysema": "emphysema",
    "Pulmonary Emphysema": "emphysema",
    "Bullous Emphysema": "emphysema",
    "Pulmonary Fibrosis": "fibrosis",
    "Fibrosis": "fibrosis",
    "Hernia, Hiatal": "hernia",
    "Hernia, Diaphragmatic": "hernia",
    "Fractures, Bone": "fracture",
    "Calcified Granuloma": "granuloma",
    "Granuloma": "granuloma",
    "Granulomatous Disease": "granuloma",
    "Calcinosis": "calcification",
    "Scoliosis": "scoliosis",
    "Kyphosis": "kyphosis",
    "Spondylosis": "spondylosis",
    "Osteophyte": "spondylosis",
    "Atherosclerosis": "aortic_atheromatosis",
    "Cicatrix": "scarring",
    "Bronchiectasis": "bronchiectasis",
    "Lung Diseases, Interstitial": "interstitial_pattern",
    "Tuberculosis": "tuberculosis",
    "Diaphragmatic Eventration": "elevated_hemidiaphragm",
    "Catheters, Indwelling": "support_devices",
    "Surgical Instruments": "support_devices",
    "Implanted Medical Device": "support_devices",
    "Tube, Inserted": "support_devices",
    "Medical Device": "support_devices",
    "Stents": "support_devices",
    "Sutures": "support_devices",
    "Spinal Fusion": "support_devices",
    "Cavitation": "lung_lesion",
    "Heart Failure": "edema",
    "Hyperostosis, Diffuse Idiopathic Skeletal": "spondylosis",
    # Considered and left out: not in the finding set, or too vague on their own.
    "Lung": None,
    "Markings": None,
    "Thoracic Vertebrae": None,
    "Spine": None,
    "Aorta": None,
    "Aorta, Thoracic": None,
    "Diaphragm": None,
    "Costophrenic Angle": None,
    "Thickening": None,
    "Cardiac Shadow": None,
    "Mediastinum": None,
    "Deformity": None,
    "No Indexing": None,
    "Technical Quality of Image Unsatisfactory": None,
    "Pulmonary Disease, Chronic Obstructive": None,
    "Foreign Bodies": None,
    "Subcutaneous Emphysema": None,
    "Pericardial Effusion": None,
    "Arthritis": None,  # any joint; the spine's is mapped below
    "Blister": None,
    "Pleura": None,
    "Sulcus": None,
}

#: (head, qualifier) -> key; a qualifier is any ``/``-separated part after the head, or a tuple
#: of qualifiers that must all be there.
MESH_QUALIFIED_TO_KEY: tuple[tuple[str, str | tuple[str, ...], str], ...] = (
    ("Lung", "hypoinflation", "hypoinflation"),
    ("Lung", "hyperdistention", "hyperinflation"),
    ("Lung", "interstitial", "interstitial_pattern"),
    ("Markings", "interstitial", "interstitial_pattern"),
    # An interstitial opacity is both an opacity and an interstitial pattern.
    ("Opacity", "interstitial", "lung_opacity"),
    ("Opacity", "interstitial", "interstitial_pattern"),
    ("Markings", "reticular", "interstitial_pattern"),
    ("Thoracic Vertebrae", "degenerative", "spondylosis"),
    ("Spine", "degenerative", "spondylosis"),
    ("Lumbar Vertebrae", "degenerative", "spondylosis"),
    ("Cervical Vertebrae", "degenerative", "spondylosis"),
    ("Aorta", "tortuous", "aortic_elongation"),
    ("Aorta, Thoracic", "tortuous", "aortic_elongation"),
    ("Aorta", "calcified", "aortic_atheromatosis"),
    ("Calcinosis", "aorta", "aortic_atheromatosis"),
    ("Calcinosis", "aorta, thoracic", "aortic_atheromatosis"),
    ("Arthritis", "spine", "spondylosis"),
    ("Arthritis", "thoracic vertebrae", "spondylosis"),
    ("Arthritis", "lumbar vertebrae", "spondylosis"),
    ("Arthritis", "cervical vertebrae", "spondylosis"),
    ("Diaphragm", "flattened", "hyperinflation"),
    ("Blister", "lung", "emphysema"),
    # In IU reports nearly always "bronchovascular crowding", the sign of low lung volumes.
    ("Markings", "bronchovascular", "hypoinflation"),
    ("Aorta, Thoracic", "calcified", "aortic_atheromatosis"),
    ("Diaphragm", "elevated", "elevated_hemidiaphragm"),
    ("Thickening", "pleura", "pleural_thickening"),
    ("Pleura", "thickening", "pleural_thickening"),
    ("Cardiac Shadow", "enlarged", "cardiomegaly"),
    ("Heart", "enlarged", "cardiomegaly"),
    ("Mediastinum", "prominent", "enlarged_cardiomediastinum"),
    ("Mediastinum", "enlarged", "enlarged_cardiomediastinum"),
    ("Mediastinum", "widened", "enlarged_cardiomediastinum"),
    # A round opacity of the lung is a nodule (Fleischner glossary: "a rounded or irregular
    # opacity ... up to 3 cm"): IU's indexers file "nodular opacity/density" this way.
    ("Opacity", ("lung", "round"), "nodule"),
    ("Opacity", ("lung", "round"), "lung_opacity"),
    ("Density", ("lung", "round"), "nodule"),
    ("Density", ("lung", "round"), "lung_opacity"),
)

#: Signs of a finding, (head, qualifier) -> key: the key holds unless the report denies it
#: ("Blunting of the costophrenic angle, likely scarring. No pleural effusion.").
MESH_SIGN_TO_KEY: tuple[tuple[str, str, str], ...] = (
    ("Costophrenic Angle", "blunted", "pleural_effusion"),
    ("Pleura", "blunted", "pleural_effusion"),
    ("Sulcus", "blunted", "pleural_effusion"),
)

PADCHEST_TO_KEY: dict[str, str] = {
    "normal": "no_finding",
    "pleural effusion": "pleural_effusion",
    "loculated pleural effusion": "pleural_effusion",
    "loculated fissural effusion": "pleural_effusion",
    "empyema": "pleural_effusion",
    "costophrenic angle blunting": "pleural_effusion",
    "cardiomegaly": "cardiomegaly",
    "pneumonia": "pneumonia",
    "atypical pneumonia": "pneumonia",
    "atelectasis": "atelectasis",
    "atelectasis basal": "atelectasis",
    "volume loss": "atelectasis",
    "laminar atelectasis": "atelectasis",
    "lobar atelectasis": "atelectasis",
    "segmental atelectasis": "atelectasis",
    "round atelectasis": "atelectasis",
    "total atelectasis": "atelectasis",
    "consolidation": "consolidation",
    "alveolar pattern": "lung_opacity",
    "increased density": "lung_opacity",
    "ground glass pattern": "lung_opacity",
    "infiltrates": "infiltration",
    "interstitial pattern": "interstitial_pattern",
    "reticular interstitial pattern": "interstitial_pattern",
    "reticulonodular interstitial pattern": "interstitial_pattern",
    "miliary opacities": "interstitial_pattern",
    "nodule": "nodule",
    "multiple nodules": "nodule",
    "mass": "mass",
    "pulmonary mass": "mass",
    "lung metastasis": "lung_lesion",
    "cavitation": "lung_lesion",
    "abscess": "lung_lesion",
    "emphysema": "emphysema",
    "bullas": "emphysema",
    "air trapping": "hyperinflation",
    "hyperinflated lung": "hyperinflation",
    "flattened diaphragm": "hyperinflation",
    "hypoexpansion": "hypoinflation",
    "hypoexpansion basal": "hypoinflation",
    "bronchovascular markings": "interstitial_pattern",
    "pulmonary fibrosis": "fibrosis",
    "fibrotic band": "scarring",
    "pleural thickening": "pleural_thickening",
    "apical pleural thickening": "pleural_thickening",
    "pleural plaques": "pleural_other",
    "calcified pleural plaques": "pleural_other",
    "calcified pleural thickening": "pleural_thickening",
    "hiatal hernia": "hernia",
    "pneumothorax": "pneumothorax",
    "hydropneumothorax": "pneumothorax",
    "pulmonary edema": "edema",
    "heart insufficiency": "edema",  # as CheXpert reads heart failure
    "kerley lines": "edema",
    "scoliosis": "scoliosis",
    "kyphosis": "kyphosis",
    "vertebral degenerative changes": "spondylosis",
    "aortic elongation": "aortic_elongation",
    "descendent aortic elongation": "aortic_elongation",
    "ascendent aortic elongation": "aortic_elongation",
    "aortic atheromatosis": "aortic_atheromatosis",
    "aortic button enlargement": "aortic_elongation",
    "calcified granuloma": "granuloma",
    "granuloma": "granuloma",
    "calcified densities": "calcification",
    "bronchiectasis": "bronchiectasis",
    "hemidiaphragm elevation": "elevated_hemidiaphragm",
    "diaphragmatic eventration": "elevated_hemidiaphragm",
    "tuberculosis": "tuberculosis",
    "tuberculosis sequelae": "tuberculosis",
    "mediastinal enlargement": "enlarged_cardiomediastinum",
    "superior mediastinal enlargement": "enlarged_cardiomediastinum",
    "mediastinic lipomatosis": "enlarged_cardiomediastinum",
    "fracture": "fracture",
    "rib fracture": "fracture",
    "callus rib fracture": "fracture",
    "clavicle fracture": "fracture",
    "humeral fracture": "fracture",
    "vertebral fracture": "fracture",
    "vertebral compression": "fracture",
    "vertebral anterior compression": "fracture",
    "pacemaker": "support_devices",
    "dual chamber device": "support_devices",
    "single chamber device": "support_devices",
    "electrical device": "support_devices",
    "nsg tube": "support_devices",
    "endotracheal tube": "support_devices",
    "tracheostomy tube": "support_devices",
    "chest drain tube": "support_devices",
    "catheter": "support_devices",
    "central venous catheter": "support_devices",
    "central venous catheter via jugular vein": "support_devices",
    "central venous catheter via subclavian vein": "support_devices",
    "central venous catheter via umbilical vein": "support_devices",
    "reservoir central venous catheter": "support_devices",
    "artificial heart valve": "support_devices",
    "artificial aortic heart valve": "support_devices",
    "artificial mitral heart valve": "support_devices",
    "heart valve calcified": "calcification",
    "sternotomy": "support_devices",
    "surgery": "support_devices",
    "metal": "support_devices",
    "osteosynthesis material": "support_devices",
    "suture material": "support_devices",
    "bone cement": "support_devices",
    "humeral prosthesis": "support_devices",
    "endoprosthesis": "support_devices",
    "aortic endoprosthesis": "support_devices",
    "gastrostomy tube": "support_devices",
    "nephrostomy tube": "support_devices",
    "double j stent": "support_devices",
    "ventriculoperitoneal drain tube": "support_devices",
}


def _check_tables() -> None:
    targets: list[str | None] = [
        *NIH_TO_KEY.values(),
        *CHEXPERT_TO_KEY.values(),
        *(k for v in MESH_HEAD_TO_KEY.values() for k in ((v,) if isinstance(v, str) else v or ())),
        *(key for _, _, key in MESH_QUALIFIED_TO_KEY),
        *(key for _, _, key in MESH_SIGN_TO_KEY),
        *PADCHEST_TO_KEY.values(),
    ]
    unknown = sorted({t for t in targets if t is not None and t not in FINDINGS_BY_KEY})
    if unknown:  # pragma: no cover - guards edits to the tables
        raise RuntimeError(f"training.label_maps maps onto unknown finding keys: {unknown}")


_check_tables()


def nih_to_key(label: str) -> str | None:
    """The finding key of one NIH ChestX-ray14 label (``None`` when not in the finding set)."""
    return NIH_TO_KEY.get(label.strip())


def chexpert_to_key(label: str) -> str | None:
    """The finding key of one CheXpert observation name."""
    return CHEXPERT_TO_KEY.get(label.strip())


def padchest_to_key(label: str) -> str | None:
    """The finding key of one PadChest label (case and surrounding spaces ignored)."""
    return PADCHEST_TO_KEY.get(label.strip().lower())


def _fold_head(head: str) -> str:
    # The annotations spell a few heads with another case or two spaces ("Thoracic vertebrae",
    # "Subcutaneous  Emphysema").
    return " ".join(head.split()).lower()


# The tables with their heads folded once, as the terms' heads are.
_MESH_HEADS: dict[str, str | tuple[str, ...] | None] = {
    _fold_head(k): v for k, v in MESH_HEAD_TO_KEY.items()}
_MESH_QUALIFIED = tuple((_fold_head(h), q, key) for h, q, key in MESH_QUALIFIED_TO_KEY)
_MESH_SIGNS = tuple((_fold_head(h), q, key) for h, q, key in MESH_SIGN_TO_KEY)


def _split_term(term: str) -> tuple[str, set[str]]:
    """The folded head of one MeSH term and its lower-case qualifiers."""
    parts = [p.strip() for p in term.split("/")]
    return _fold_head(parts[0]), {p.lower() for p in parts[1:] if p}


def mesh_to_keys(term: str, denied: Iterable[str] = ()) -> set[str]:
    """The finding keys of one IU X-Ray MeSH term such as ``"Opacity/lung/base/left/mild"``.

    Qualified rules are tried first, then signs (:data:`MESH_SIGN_TO_KEY`, dropped for the keys
    in ``denied``: those the report says are absent), then the head alone. Heads are matched
    without regard to case or repeated spaces. An unmapped term gives an empty set.
    """
    head, qualifiers = _split_term(term)
    keys = {key for h, q, key in _MESH_QUALIFIED
            if h == head and (q in qualifiers if isinstance(q, str) else qualifiers.issuperset(q))}
    if keys:
        return keys
    signs = {key for h, q, key in _MESH_SIGNS if h == head and q in qualifiers}
    if signs:
        return signs - set(denied)
    value = _MESH_HEADS.get(head)
    if value is None and head not in _MESH_HEADS:
        logger.debug("IU MeSH head %r has no mapping", head)
    if value is None:
        return set()
    return {value} if isinstance(value, str) else set(value)


def mesh_sign_keys(terms: Iterable[str]) -> set[str]:
    """The keys that ``terms`` give only through signs: those that need the report's reading."""
    out: set[str] = set()
    for term in terms:
        head, qualifiers = _split_term(term)
        out |= {key for h, q, key in _MESH_SIGNS if h == head and q in qualifiers}
    return out
