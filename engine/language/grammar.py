"""Spanish realisation of :class:`~engine.language.statement.Statement` objects.

Word order and agreement as a radiologist dictates them: preposed size ("Pequeño derrame
pleural derecho."), postposed severity and side agreeing with the noun ("Atelectasias
laminares bilaterales."), location as a prepositional phrase ("en el lóbulo inferior
izquierdo", "en ambas bases"), hedges before the noun phrase ("No se descarta neumonía en la
base izquierda."), negations grouped with "ni" ("No se observan condensaciones ni derrame
pleural.") and absent findings said as normality where that is how they are written
("Índice cardiotorácico conservado.", "Senos costofrénicos libres.").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace

from engine.language.lexicon import (
    CHANGE,
    DEVICE_NOUNS,
    FINDING_NOUNS,
    PLURALE_TANTUM,
    SEVERITY,
    SIDE,
    Gender,
    Noun,
    adj,
)
from engine.language.statement import Location, Statement

logger = logging.getLogger(__name__)

#: Zone -> its noun (the side agrees with it).
ZONE_NOUNS: dict[str, Noun] = {
    "upper_lobe": Noun("lóbulo superior", "lóbulos superiores", "m"),
    "middle_lobe": Noun("lóbulo medio", "lóbulos medios", "m"),
    "lower_lobe": Noun("lóbulo inferior", "lóbulos inferiores", "m"),
    "lingula": Noun("língula", "língulas", "f"),
    "base": Noun("base", "bases", "f"),
    "apex": Noun("vértice", "vértices", "m"),
    "hilum": Noun("hilio", "hilios", "m"),
    "perihilar": Noun("región perihiliar", "regiones perihiliares", "f"),
    "infrahilar": Noun("región infrahiliar", "regiones infrahiliares", "f"),
    "suprahilar": Noun("región suprahiliar", "regiones suprahiliares", "f"),
    "upper_zone": Noun("campo pulmonar superior", "campos pulmonares superiores", "m"),
    "mid_zone": Noun("campo pulmonar medio", "campos pulmonares medios", "m"),
    "lower_zone": Noun("campo pulmonar inferior", "campos pulmonares inferiores", "m"),
    "retrocardiac": Noun("región retrocardíaca", "regiones retrocardíacas", "f"),
    "costophrenic": Noun("seno costofrénico", "senos costofrénicos", "m"),
    "lung": Noun("pulmón", "pulmones", "m"),
    "hemithorax": Noun("hemitórax", "hemitórax", "m"),
    "mediastinum": Noun("mediastino", "mediastinos", "m"),
    "clavicle": Noun("clavícula", "clavículas", "f"),
    "rib": Noun("arco costal", "arcos costales", "m"),
    "spine": Noun("columna vertebral", "columnas vertebrales", "f"),
    "thoracic_spine": Noun("columna dorsal", "columnas dorsales", "f"),
    "lumbar_spine": Noun("columna lumbar", "columnas lumbares", "f"),
    "shoulder": Noun("hombro", "hombros", "m"),
    "humerus": Noun("húmero", "húmeros", "m"),
    "hemidiaphragm": Noun("hemidiafragma", "hemidiafragmas", "m"),
    "aortic_arch": Noun("cayado aórtico", "cayados aórticos", "m"),
    "aorta": Noun("aorta", "aortas", "f"),
    "subpleural": Noun("región subpleural", "regiones subpleurales", "f"),
    "peripheral": Noun("periferia pulmonar", "periferias pulmonares", "f"),
    "central": Noun("región central", "regiones centrales", "f"),
    "axilla": Noun("axila", "axilas", "f"),
    "chest_wall": Noun("pared torácica", "paredes torácicas", "f"),
    "scapula": Noun("escápula", "escápulas", "f"),
    "sternum": Noun("esternón", "esternones", "m"),
    "lateral": Noun("región lateral", "regiones laterales", "f"),
    "paratracheal": Noun("región paratraqueal", "regiones paratraqueales", "f"),
    "upper_abdomen": Noun("abdomen superior", "abdómenes superiores", "m"),
    "carina": Noun("carina", "carinas", "f"),
    "svc": Noun("vena cava superior", "venas cavas superiores", "f"),
    "cavoatrial_junction": Noun("unión cavoauricular", "uniones cavoauriculares", "f"),
    "right_atrium": Noun("aurícula derecha", "aurículas derechas", "f"),
    "right_ventricle": Noun("ventrículo derecho", "ventrículos derechos", "m"),
    "stomach": Noun("estómago", "estómagos", "m"),
}

#: Venous access of a catheter, as an adjective after the device ("catéter ... yugular").
_ACCESS = {"jugular": adj("yugular"), "subclavian": adj("subclavio"), "femoral": adj("femoral")}
#: Devices whose tips are electrodes.
_ELECTRODE_DEVICES = frozenset({"pacemaker", "defibrillator", "leads"})

#: Zones in the lung: a finding placed there drops its "pulmonar" ("Opacidad en la língula").
LUNG_ZONES: frozenset[str] = frozenset({
    "upper_lobe", "middle_lobe", "lower_lobe", "lingula", "base", "apex", "perihilar",
    "infrahilar", "suprahilar", "upper_zone", "mid_zone", "lower_zone", "retrocardiac",
    "lung", "subpleural", "peripheral", "central", "lateral", "hilum",
})

#: Statements of normal anatomy.
NORMAL_SENTENCES: dict[str, str] = {
    "lungs_clear": "Parénquima pulmonar sin alteraciones.",
    "lungs_expanded": "Pulmones bien expandidos.",
    "bones_intact": "Estructuras óseas sin alteraciones.",
    "bones_no_acute": "Sin alteraciones óseas agudas.",
    "trachea_midline": "Tráquea centrada.",
    "vasculature_normal": "Vascularización pulmonar normal.",
    "no_acute_disease": "Sin hallazgos cardiopulmonares agudos.",
    "normal_study": "Sin hallazgos patológicos significativos.",
    "soft_tissues_normal": "Partes blandas sin alteraciones.",
    "diaphragm_normal": "Diafragmas de morfología y posición normales.",
    "hila_normal": "Hilios de tamaño y morfología normales.",
    "aorta_normal": "Aorta de calibre normal.",
    "upper_abdomen_normal": "Abdomen superior sin alteraciones.",
    "no_focal_disease": "Sin alteraciones pulmonares focales.",
    "no_consolidation_effusion_pneumothorax": (
        "No se observan condensaciones, neumotórax ni derrame pleural."
    ),
    "heart_mediastinum_normal": "Silueta cardiomediastínica sin alteraciones.",
    "pleura_normal": "Espacios pleurales libres.",
    "unchanged_study": "Sin cambios significativos respecto al estudio previo.",
    "heart_normal_size_unstated": "Corazón sin alteraciones.",
    "postsurgical": "Cambios postquirúrgicos.",
    "technique_pa_lateral": "Radiografía de tórax en proyecciones posteroanterior y lateral.",
    "heart_upper_normal": "Índice cardiotorácico en el límite alto de la normalidad.",
}

#: Absent findings said as normality.
NORMAL_STYLE: dict[str, str] = {
    "cardiomegaly": "Índice cardiotorácico conservado.",
    "enlarged_cardiomediastinum": "Mediastino de anchura normal.",
    "pleural_effusion": "Senos costofrénicos libres.",
    "hypoinflation": "Adecuada insuflación pulmonar.",
    "hyperinflation": "Adecuada insuflación pulmonar.",
    "no_finding": "Sin hallazgos patológicos significativos.",
}

#: Hedge -> (singular, plural) words before the noun phrase.
_HEDGE = {
    "possible": ("posible", "posibles"),
    "probable": ("probable", "probables"),
    "cannot_exclude": ("no se descarta", "no se descartan"),
    "suspected": ("sospecha de", "sospecha de"),
}

_DE_ART = {
    ("m", False): "del", ("f", False): "de la", ("m", True): "de los", ("f", True): "de las"
}
_EN_ART = {
    ("m", False): "en el", ("f", False): "en la", ("m", True): "en los", ("f", True): "en las"
}
_AMBOS = {"m": "ambos", "f": "ambas"}
_ARTICLE = {"m": "el", "f": "la"}
#: Changes said as an adjective right after the noun; the others close the phrase.
_ADJECTIVAL_CHANGE = frozenset({"stable", "chronic", "old", "healed", "persistent", "residual"})


def capitalise(text: str) -> str:
    """First letter upper case, accents kept ("índice" -> "Índice")."""
    return text[:1].upper() + text[1:] if text else text


def sentence(text: str) -> str:
    """``text`` as one sentence: capitalised, one final full stop."""
    text = " ".join(text.split()).rstrip(" .")
    return capitalise(text) + "." if text else ""


def _format_size(mm: float) -> str:
    if mm >= 20 and mm % 10 == 0:
        return f"de {int(mm // 10)} cm"
    if float(mm).is_integer():
        return f"de {int(mm)} mm"
    return "de " + f"{mm:.1f}".replace(".", ",") + " mm"  # decimal comma


def zone_phrase(location: Location, prep: str = "en") -> str:
    """The prepositional phrase for a location with a zone ("en la base derecha", "en ambas
    bases"); empty when the location has no zone."""
    if location.zone is None:
        return ""
    noun = ZONE_NOUNS[location.zone]
    if location.side == "bilateral":
        word = "de" if prep == "de" else "en"
        return f"{word} {_AMBOS[noun.gender]} {noun.plural}"
    plural = location.plural_zone
    table = _DE_ART if prep == "de" else _EN_ART
    out = f"{table[(noun.gender, plural)]} {noun.form(plural)}"
    if location.side is not None:
        out += " " + SIDE[location.side].agree(noun.gender, plural)
    return out


def _noun_of(st: Statement) -> tuple[str, Gender, bool]:
    """The head noun phrase of a finding statement, its gender and number."""
    assert st.finding is not None
    if st.finding == "support_devices" and st.device in DEVICE_NOUNS:
        noun = DEVICE_NOUNS[st.device]
    else:
        noun = FINDING_NOUNS[st.finding]
    plural = (st.plural and noun.count) or st.finding in PLURALE_TANTUM
    if st.presence == "absent" and noun.count and not st.change:
        plural = True  # "No se observan nódulos"
    text = noun.form(plural)
    loc = st.location
    if loc is not None and loc.zone in LUNG_ZONES:
        text = text.replace(" pulmonares", "").replace(" pulmonar", "")
    if st.finding == "spondylosis" and loc is not None and loc.zone is not None:
        text = "cambios degenerativos"
    return text, noun.gender, plural


def noun_phrase(st: Statement) -> str:
    """The finding's noun phrase with its size, severity, side, location and change, in
    Spanish order and agreement; no hedge, no verb."""
    assert st.finding is not None
    loc = st.location or Location()
    # Findings whose natural wording names the anatomy itself.
    if st.finding == "elevated_hemidiaphragm" and loc.side is not None and loc.side != "bilateral":
        head = "elevación " + zone_phrase(Location(loc.side, "hemidiaphragm"), prep="de")
        return _with_change(head, st, "f", False)
    if st.finding == "pleural_effusion" and loc.zone == "costophrenic":
        head = "pinzamiento " + zone_phrase(loc, prep="de")
        return _with_change(head, st, "m", False)
    loc = _useful_location(st.finding, loc)
    st = replace(st, location=loc if (loc.side or loc.zone) else None)
    noun, gender, plural = _noun_of(st)
    before: list[str] = []
    after: list[str] = []
    for key in sorted(st.severity, key=_severity_rank):
        if key not in SEVERITY:
            continue
        word, preposed = SEVERITY[key]
        (before if preposed else after).append(word.agree(gender, plural))
    if st.change in _ADJECTIVAL_CHANGE:
        after.append(CHANGE[st.change].agree(gender, plural))
    if st.size_mm is not None:
        after.append(_format_size(st.size_mm))
    if st.access is not None:
        after.append(_ACCESS[st.access].agree(gender, plural))
    if loc.zone is None and loc.side is not None:
        after.append(SIDE[loc.side].agree(gender, plural))
    elif loc.zone is not None:
        prep = "de" if st.finding == "fracture" else "en"
        after.append(zone_phrase(loc, prep=prep))
    if st.tip:
        after.append(_tip_phrase(st))
    head = " ".join([*before, noun, *after])
    return _with_change(head, st, gender, plural)


def _tip_phrase(st: Statement) -> str:
    """Where a device ends: "con extremo en la vena cava superior", "con extremo a 3 cm por
    encima de la carina", "con electrodos en la aurícula derecha y el ventrículo derecho"."""
    what = "con electrodos" if st.device in _ELECTRODE_DEVICES else "con extremo"
    places = [f"{_ARTICLE[ZONE_NOUNS[z].gender]} {ZONE_NOUNS[z].singular}" for z in st.tip]
    if st.tip_relation is not None and st.tip_mm is not None:
        where = "por encima" if st.tip_relation == "above" else "por debajo"
        distance = _format_size(st.tip_mm).removeprefix("de ")
        return f"{what} a {distance} {where} de {places[0]}"
    return f"{what} en " + " y ".join(places)


#: Zones a finding's own name already says ("elongación aórtica en la aorta").
_IMPLIED_ZONES: dict[str, frozenset[str]] = {
    "elevated_hemidiaphragm": frozenset({"hemidiaphragm"}),
    "aortic_elongation": frozenset({"aorta"}),
    "aortic_atheromatosis": frozenset({"aorta"}),
    "calcification": frozenset(),
    "spondylosis": frozenset({"spine"}),
    "hernia": frozenset({"hemidiaphragm"}),
}
#: Findings of the whole chest or both lungs: a location adds nothing.
_UNLOCATED: frozenset[str] = frozenset({
    "cardiomegaly", "enlarged_cardiomediastinum", "hyperinflation", "hypoinflation",
    "scoliosis", "kyphosis", "hernia",
})
#: Zones that exist on one side only: naming the side is redundant.
_ONE_SIDED: frozenset[str] = frozenset({"lingula", "middle_lobe"})


def _useful_location(finding: str, loc: Location) -> Location:
    if finding in _UNLOCATED:
        return Location()
    zone = loc.zone
    if zone is not None and zone in _IMPLIED_ZONES.get(finding, frozenset()):
        if finding == "spondylosis":
            return loc  # "cambios degenerativos en la columna vertebral" reads well
        zone = None
    side = None if zone in _ONE_SIDED else loc.side
    return Location(side, zone, loc.plural_zone)


def _severity_rank(key: str) -> int:
    # Descriptive adjectives sit next to the noun, then size, then degree:
    # "granuloma calcificado de gran tamaño", "atelectasia laminar leve".
    order = ("calcified", "linear", "patchy", "streaky", "subsegmental", "focal", "diffuse",
             "extensive", "large", "mild", "moderate", "severe")
    return order.index(key) if key in order else -1


def _with_change(head: str, st: Statement, gender: Gender, plural: bool) -> str:
    if st.change is None or st.change in _ADJECTIVAL_CHANGE or st.change not in CHANGE:
        return head
    return f"{head}, {CHANGE[st.change].agree(gender, plural)}"


def realise_one(st: Statement) -> str:
    """One statement as one Spanish sentence."""
    if st.normal is not None:
        return NORMAL_SENTENCES[st.normal]
    assert st.finding is not None
    if st.finding == "no_finding":
        if st.presence == "absent":
            return ""  # "not normal" is said by the findings themselves
        return NORMAL_STYLE["no_finding"]
    if st.presence == "absent":
        if st.change == "resolved":
            _noun, gender, plural = _noun_of(st)
            inner = noun_phrase(Statement(st.finding, "present", location=st.location,
                                          device=st.device, plural=plural))
            word = "retirada" if st.finding == "support_devices" else "resolución"
            return sentence(f"{word} {_DE_ART[(gender, plural)]} {inner}")
        if st.normal_style and st.finding in NORMAL_STYLE and not st.location:
            return NORMAL_STYLE[st.finding]
        return realise_negatives([st])
    phrase = noun_phrase(st)
    if st.presence == "uncertain":
        singular, plural_form = _HEDGE[st.hedge or "possible"]
        return sentence(f"{plural_form if _noun_of(st)[2] else singular} {phrase}")
    return sentence(phrase)


def realise_negatives(statements: Sequence[Statement]) -> str:
    """Absent findings in one sentence: "No se observan condensaciones ni derrame pleural."."""
    phrases: list[str] = []
    first_plural = False
    for i, st in enumerate(statements):
        phrase = noun_phrase(st)
        if i == 0:
            first_plural = _noun_of(st)[2]
        phrases.append(phrase)
    if not phrases:
        return ""
    verb = "observan" if first_plural else "observa"
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " ni " + phrases[-1]
    return sentence(f"no se {verb} {body}")


def realise(statements: Iterable[Statement]) -> list[str]:
    """Statements as Spanish sentences, in order; consecutive plain negations are grouped
    ("No se observan condensaciones ni derrame pleural.")."""
    out: list[str] = []
    pending: list[Statement] = []

    def flush() -> None:
        if pending:
            out.append(realise_negatives(pending))
            pending.clear()

    for st in statements:
        plain_negative = (
            st.finding is not None
            and st.finding != "no_finding"
            and st.presence == "absent"
            and st.change != "resolved"
            and not (st.normal_style and st.finding in NORMAL_STYLE and not st.location)
        )
        if plain_negative:
            pending.append(st)
            continue
        flush()
        text = realise_one(st)
        if text:
            out.append(text)
    flush()
    return _dedupe(out)


def _dedupe(sentences: list[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for s in sentences:
        if s not in seen:
            seen.add(s)
            kept.append(s)
    return kept
