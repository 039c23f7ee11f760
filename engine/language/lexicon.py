"""The Spanish words of chest radiography, with the grammar each one needs.

Every noun carries its gender and its plural; every adjective its four forms. The grammar in
:mod:`engine.language.grammar` agrees them. Spelling follows the Real Academia Española;
where Chilean and Peninsular usage differ this module uses the Peninsular form and
docs/spanish.md lists the choices (e.g. "cardíaco" with the accent, "condensación" for
consolidation, "seno costofrénico").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

Gender = Literal["m", "f"]


@dataclass(frozen=True)
class Noun:
    """A noun phrase head: ``singular`` and ``plural`` forms (any postposed complement
    included, e.g. "derrame pleural" / "derrames pleurales") and its grammatical gender.

    ``count`` says whether a radiologist negates it in the plural ("No se observan nódulos")
    or in the singular ("No se observa neumotórax").
    """

    singular: str
    plural: str
    gender: Gender
    count: bool = False

    def form(self, plural: bool) -> str:
        return self.plural if plural else self.singular


@dataclass(frozen=True)
class Adjective:
    """An adjective's four forms: masculine/feminine, singular/plural."""

    ms: str
    fs: str
    mp: str
    fp: str

    def agree(self, gender: Gender, plural: bool) -> str:
        if gender == "m":
            return self.mp if plural else self.ms
        return self.fp if plural else self.fs


def adj(ms: str, fs: str | None = None) -> Adjective:
    """Regular adjective: "derecho" -> derecha/derechos/derechas; "bilateral" -> bilaterales;
    "leve" -> leves."""
    if fs is None:
        fs = ms[:-1] + "a" if ms.endswith("o") else ms
    return Adjective(ms, fs, _plural(ms), _plural(fs))


def inv(text: str) -> Adjective:
    """An invariable modifier phrase ("de nueva aparición")."""
    return Adjective(text, text, text, text)


def _plural(word: str) -> str:
    last = word.split(" ")
    head = last[0]
    if head[-1] in "aeiouáéó":
        head += "s"
    elif head.endswith("z"):
        head = head[:-1] + "ces"
    else:
        head = _unaccent_last(head) + "es"
    return " ".join([head, *last[1:]])


def _unaccent_last(word: str) -> str:
    # "lateral" -> "laterales"; an acute final vowel loses its accent ("común" -> "comunes").
    pairs = (("ón", "on"), ("ún", "un"), ("án", "an"), ("én", "en"), ("ín", "in"), ("ás", "as"))
    for a, b in pairs:
        if word.endswith(a):
            return word[: -len(a)] + b
    return word


#: Finding key -> its Spanish noun. The keys are the unified finding set
#: (training.findings); the engine learns that set from an artifact's manifest.
FINDING_NOUNS: dict[str, Noun] = {
    "enlarged_cardiomediastinum": Noun(
        "ensanchamiento mediastínico", "ensanchamientos mediastínicos", "m"
    ),
    "cardiomegaly": Noun("cardiomegalia", "cardiomegalias", "f"),
    "lung_opacity": Noun("opacidad pulmonar", "opacidades pulmonares", "f", count=True),
    "lung_lesion": Noun("lesión pulmonar", "lesiones pulmonares", "f", count=True),
    "edema": Noun("edema pulmonar", "edemas pulmonares", "m"),
    "consolidation": Noun("condensación", "condensaciones", "f", count=True),
    "pneumonia": Noun("neumonía", "neumonías", "f"),
    "atelectasis": Noun("atelectasia", "atelectasias", "f", count=True),
    "pneumothorax": Noun("neumotórax", "neumotórax", "m"),
    "pleural_effusion": Noun("derrame pleural", "derrames pleurales", "m"),
    "pleural_other": Noun("placa pleural", "placas pleurales", "f", count=True),
    "fracture": Noun("fractura", "fracturas", "f", count=True),
    "support_devices": Noun("dispositivo", "dispositivos", "m", count=True),
    "infiltration": Noun("infiltrado pulmonar", "infiltrados pulmonares", "m", count=True),
    "mass": Noun("masa pulmonar", "masas pulmonares", "f", count=True),
    "nodule": Noun("nódulo pulmonar", "nódulos pulmonares", "m", count=True),
    "emphysema": Noun("enfisema pulmonar", "enfisemas pulmonares", "m"),
    "fibrosis": Noun("fibrosis pulmonar", "fibrosis pulmonares", "f"),
    "pleural_thickening": Noun("engrosamiento pleural", "engrosamientos pleurales", "m"),
    "hernia": Noun("hernia de hiato", "hernias de hiato", "f"),
    "hyperinflation": Noun("hiperinsuflación pulmonar", "hiperinsuflaciones pulmonares", "f"),
    "hypoinflation": Noun("hipoinsuflación pulmonar", "hipoinsuflaciones pulmonares", "f"),
    "granuloma": Noun("granuloma", "granulomas", "m", count=True),
    "calcification": Noun("calcificación", "calcificaciones", "f", count=True),
    "scoliosis": Noun("escoliosis", "escoliosis", "f"),
    "kyphosis": Noun("cifosis", "cifosis", "f"),
    "spondylosis": Noun(
        "cambios degenerativos vertebrales", "cambios degenerativos vertebrales", "m"
    ),
    "aortic_elongation": Noun("elongación aórtica", "elongaciones aórticas", "f"),
    "aortic_atheromatosis": Noun("ateromatosis aórtica", "ateromatosis aórticas", "f"),
    "elevated_hemidiaphragm": Noun(
        "elevación hemidiafragmática", "elevaciones hemidiafragmáticas", "f"
    ),
    "scarring": Noun("tracto cicatricial", "tractos cicatriciales", "m", count=True),
    "bronchiectasis": Noun("bronquiectasias", "bronquiectasias", "f"),
    "interstitial_pattern": Noun("patrón intersticial", "patrones intersticiales", "m"),
    "tuberculosis": Noun("tuberculosis", "tuberculosis", "f"),
}

#: Findings whose noun is plural in the singular sense ("cambios degenerativos",
#: "bronquiectasias"): the verb and adjectives agree in the plural.
PLURALE_TANTUM: frozenset[str] = frozenset({"spondylosis", "bronchiectasis"})

#: Devices: a more precise noun than "dispositivo" where the source names it.
DEVICE_NOUNS: dict[str, Noun] = {
    "pacemaker": Noun("marcapasos", "marcapasos", "m", count=True),
    "defibrillator": Noun("desfibrilador automático implantable",
                          "desfibriladores automáticos implantables", "m", count=True),
    "endotracheal_tube": Noun("tubo endotraqueal", "tubos endotraqueales", "m", count=True),
    "tracheostomy": Noun("cánula de traqueostomía", "cánulas de traqueostomía", "f", count=True),
    "nasogastric_tube": Noun("sonda nasogástrica", "sondas nasogástricas", "f", count=True),
    "chest_tube": Noun("tubo de drenaje torácico", "tubos de drenaje torácico", "m", count=True),
    "central_line": Noun("catéter venoso central", "catéteres venosos centrales", "m", count=True),
    "catheter": Noun("catéter", "catéteres", "m", count=True),
    "sternotomy": Noun("esternotomía media", "esternotomías medias", "f"),
    "sternotomy_wires": Noun("sutura de esternotomía", "suturas de esternotomía", "f", count=True),
    "clips": Noun("clip quirúrgico", "clips quirúrgicos", "m", count=True),
    "stent": Noun("endoprótesis", "endoprótesis", "f", count=True),
    "valve": Noun("prótesis valvular", "prótesis valvulares", "f", count=True),
    "port": Noun("reservorio venoso subcutáneo", "reservorios venosos subcutáneos", "m",
                 count=True),
    "hardware": Noun("material de osteosíntesis", "materiales de osteosíntesis", "m"),
    "drain": Noun("drenaje", "drenajes", "m", count=True),
    "leads": Noun("electrodo de marcapasos", "electrodos de marcapasos", "m", count=True),
    "vertebroplasty": Noun("vertebroplastia", "vertebroplastias", "f", count=True),
    "shunt": Noun("válvula de derivación", "válvulas de derivación", "f", count=True),
    "ivc_filter": Noun("filtro de vena cava inferior", "filtros de vena cava inferior", "m",
                       count=True),
}

SIDE: dict[str, Adjective] = {
    "right": adj("derecho"),
    "left": adj("izquierdo"),
    "bilateral": adj("bilateral"),
}

#: Size and severity: (adjective, preposed?). "Pequeño derrame", "cardiomegalia leve".
SEVERITY: dict[str, tuple[Adjective, bool]] = {
    "minimal": (adj("mínimo"), True),
    "small": (adj("pequeño"), True),
    "mild": (adj("leve"), False),
    "moderate": (adj("moderado"), False),
    "large": (inv("de gran tamaño"), False),
    "severe": (adj("severo"), False),
    "extensive": (adj("extenso"), False),
    "focal": (adj("focal"), False),
    "diffuse": (adj("difuso"), False),
    "patchy": (adj("parcheado"), False),
    "streaky": (adj("lineal"), False),
    "subsegmental": (adj("subsegmentario"), False),
    "linear": (adj("laminar"), False),
    "calcified": (adj("calcificado"), False),
    "displaced": (adj("desplazado"), False),
    "alveolar": (adj("alveolar"), False),
    "dual_chamber": (adj("bicameral"), False),
    "adjacent": (adj("adyacente"), False),
    "suspicious": (adj("sospechoso"), False),
    "multiple": (Adjective("múltiple", "múltiple", "múltiples", "múltiples"), True),
    "few": (Adjective("algún", "alguna", "algunos", "algunas"), True),
}

#: Change relative to a previous study: (phrase after the noun phrase, agrees?).
CHANGE: dict[str, Adjective] = {
    "new": inv("de nueva aparición"),
    "unchanged": inv("sin cambios respecto al estudio previo"),
    "stable": adj("estable"),
    "improved": inv("en mejoría respecto al estudio previo"),
    "worsened": Adjective(*(["que ha empeorado respecto al estudio previo"] * 2),
                      *(["que han empeorado respecto al estudio previo"] * 2)),
    "increased": Adjective(*(["que ha aumentado respecto al estudio previo"] * 2),
                      *(["que han aumentado respecto al estudio previo"] * 2)),
    "decreased": Adjective(*(["que ha disminuido respecto al estudio previo"] * 2),
                      *(["que han disminuido respecto al estudio previo"] * 2)),
    "chronic": adj("crónico"),
    "old": adj("antiguo"),
    "healed": adj("antiguo"),
    "persistent": adj("persistente"),
    "residual": adj("residual"),
}
