"""English report sentence -> :class:`~engine.language.Statement` objects.

Findings and their presence come from the English labeler's mentions (the same rules the
English side of training uses), normal anatomy from the phrases of :data:`NORMAL_PATTERNS`, and
location, side, size, severity, change and device from the modifier vocabulary below. Every
word of the sentence must be accounted for: a word that is none of these (nor a grammatical
filler) makes the sentence unparseable, because realising the rest would silently drop what
that word said. Unparseable sentences are reported and dropped, never passed through.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from engine.labeler import get_labeler
from engine.labeler.rules_en import RULES_EN
from engine.labeler.text import fold
from engine.language.statement import Hedge, Location, Side, Statement

logger = logging.getLogger(__name__)

_DEID = re.compile(r"\bx{2,}\b", re.IGNORECASE)
#: Adverbs that soften without stating anything the Spanish must carry.
_NOISE = re.compile(
    r"\b(?:grossly|otherwise|essentially|overall|visualized|visualised|imaged|remaining|"
    r"currently|again|now|otherwise|also|overall|specifically|in appearance|in configuration|"
    r"and configuration|in contour|and contour)\b",
    re.IGNORECASE,
)

#: Statements of normal anatomy (no finding of the set): pattern on folded text -> normal id.
NORMAL_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"(?:the )?lungs? (?:are |is |appear |appears |remain )?(?:otherwise )?(?:grossly |essentially |"
     r"now |again )?(?:clear|well aerated|free of (?:focal )?(?:disease|infiltrates?))"
     r"(?: bilaterally| of (?:focal )?(?:airspace )?disease)?", "lungs_clear"),
    (r"clear lungs?", "lungs_clear"),
    (r"(?:the )?(?:heart|cardiac silhouette|cardiac|heart size)(?:,| and) (?:the )?(?:cardio)?mediastin"
     r"(?:um|al (?:contours?|silhouettes?|structures?))(?:,? and (?:the )?(?:hila|hilar contours?))? "
     r"(?:are |is |appear |appears )?(?:normal|unremarkable|within normal limits|stable)",
     "heart_mediastinum_normal"),
    (r"(?:the )?(?:cardio-?\s?)?mediastin(?:um|al (?:contours?|silhouettes?|structures?))"
     r"(?: is| are| appears?)? (?:normal|unremarkable|within normal limits|stable|midline)",
     "heart_mediastinum_normal"),
    (r"(?:the )?(?:cardiac|cardio ?mediastinal|cardiopulmonary) (?:silhouettes?|contours?)"
     r"(?: is| are| appears?)? (?:normal|unremarkable|within normal limits|stable)(?: in size)?",
     "heart_mediastinum_normal"),
    (r"(?:normal|unremarkable) (?:cardio)?mediastin(?:um|al (?:contours?|silhouettes?|structures?))",
     "heart_mediastinum_normal"),
    (r"normal heart", "heart_normal_size_unstated"),
    (r"(?:the )?heart size (?:is )?(?:at )?(?:the )?upper limits? of normal|(?:the )?heart size "
     r"(?:is )?(?:upper )?(?:normal|borderline)(?: enlarged)?|borderline heart size",
     "heart_upper_normal"),
    (r"(?:the )?pleural spaces? (?:are |is )?(?:clear|normal|unremarkable)", "pleura_normal"),
    (r"(?:the )?lungs? (?:are |is )?(?:expanded|inflated|aerated)(?: and clear)?", "lungs_expanded"),
    (r"(?:the )?lungs? (?:are |is )?(?:well|adequately|fully) (?:expanded|inflated|aerated)"
     r"(?: and clear)?", "lungs_expanded"),
    (r"(?:the )?(?:visualized |imaged |included )?(?:osseous|bony|skeletal|bone) "
     r"(?:structures?|thorax|elements?)?\s?(?:of the (?:thorax|chest) )?(?:are |is |appear |appears )?"
     r"(?:grossly |otherwise |structurally )?(?:intact|normal|unremarkable|within normal limits|"
     r"without (?:acute |focal )?abnormalit(?:y|ies))", "bones_intact"),
    (r"(?:no|without) (?:acute |displaced |focal )?(?:bony|osseous|skeletal|bone) (?:abnormalit(?:y|ies)|"
     r"findings?|injur(?:y|ies)|lesions?|process|disease)", "bones_no_acute"),
    (r"(?:the )?trachea (?:is )?(?:midline|normal|central|unremarkable)", "trachea_midline"),
    (r"(?:the )?(?:normal )?(?:pulmonary )?(?:vascularity|vasculature|vascular markings)"
     r"(?: is| are| appears?)? ?(?:within normal limits|normal|unremarkable)?", "vasculature_normal"),
    (r"(?:no|without) (?:(?:radiographic |x-?ray )?evidence of )?(?:an )?(?:active|acute)\s?"
     r"(?:cardiopulmonary|cardiac or pulmonary|pulmonary|intrathoracic|cardiothoracic|chest|thoracic|"
     r"cardiopulmonary or osseous|osseous or cardiopulmonary|cardiac|lung)?\s?"
     r"(?:disease|process|abnormalit(?:y|ies)|findings?|pathology|pulmonary disease|changes?|"
     r"radiographic abnormalit(?:y|ies))?", "no_acute_disease"),
    (r"(?:normal|negative|unremarkable) (?:chest|chest x-?ray|chest radiographs?|radiographs? of the chest|"
     r"examination|exam|study|radiographs?|x-?ray)", "normal_study"),
    (r"(?:the )?(?:chest|examination|study) (?:is )?(?:normal|unremarkable|negative)",
     "normal_study"),
    (r"(?:the )?soft tissues? (?:are |is )?(?:normal|unremarkable|within normal limits)",
     "soft_tissues_normal"),
    (r"(?:the )?(?:hemi)?diaphragms? (?:are |is )?(?:normal|unremarkable|intact)", "diaphragm_normal"),
    (r"(?:the )?(?:hila|hilar (?:contours?|structures?|regions?)) (?:are |is |appear )?(?:normal|unremarkable|"
     r"within normal limits)", "hila_normal"),
    (r"(?:the )?(?:thoracic )?aorta (?:is )?(?:normal|unremarkable)", "aorta_normal"),
    (r"(?:the )?(?:visualized )?upper abdomen (?:is )?(?:normal|unremarkable)", "upper_abdomen_normal"),
    (r"(?:no|without) (?:focal )?(?:pleural|parenchymal) (?:abnormalit(?:y|ies)|disease)", "pleura_normal"),
    (r"(?:there is |there has been )?no (?:significant |appreciable |interval |substantial )?"
     r"(?:change|changes)(?: (?:from|since|compared to|compared with|in comparison to) "
     r"(?:the )?(?:prior|previous|last)(?: (?:study|examination|exam|radiographs?|film))?)?",
     "unchanged_study"),
    (r"(?:stable|unchanged) (?:chest|examination|exam|appearance|study)(?: of the chest)?",
     "unchanged_study"),
)

SIDES: tuple[tuple[str, Side], ...] = (
    (r"bilateral(?:ly)?|both|biapical|bibasilar|bibasal|bihilar", "bilateral"),
    (r"right|rt", "right"),
    (r"left|lt", "left"),
)

ZONE_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"upper lobes?", "upper_lobe"),
    (r"middle lobe|mid lobe", "middle_lobe"),
    (r"lower lobes?", "lower_lobe"),
    (r"lingula(?:r)?(?: segment)?", "lingula"),
    (r"(?:lung |lung )?bases?|basilar|basal|bibasilar|bibasal|base of the lung", "base"),
    (r"(?:lung )?ap(?:ex|ices|ical)|biapical", "apex"),
    (r"perihilar", "perihilar"),
    (r"infrahilar", "infrahilar"),
    (r"suprahilar", "suprahilar"),
    (r"hil(?:um|a|ar)|bihilar", "hilum"),
    (r"upper (?:lung )?(?:zones?|fields?|lungs?)", "upper_zone"),
    (r"mid(?:-| )?(?:lung|zone|lung zones?|lung fields?|lungs?)|midlung(?: zones?)?", "mid_zone"),
    (r"lower (?:lung )?(?:zones?|fields?|lungs?)", "lower_zone"),
    (r"retrocardiac", "retrocardiac"),
    (r"costophrenic (?:angles?|sulc(?:us|i)|recess(?:es)?)", "costophrenic"),
    (r"hemithora(?:x|ces)", "hemithorax"),
    (r"clavicles?|clavicular", "clavicle"),
    (r"ribs?|rib fractures?", "rib"),
    (r"thoracic spine|thoracic vertebra(?:e|l body|l bodies)?|t-?spine", "thoracic_spine"),
    (r"lumbar spine", "lumbar_spine"),
    (r"spine|spinal|vertebral bod(?:y|ies)|vertebrae?", "spine"),
    (r"shoulders?", "shoulder"),
    (r"hum(?:erus|eral)(?: head)?", "humerus"),
    (r"hemidiaphragms?", "hemidiaphragm"),
    (r"aortic arch|aortic knob", "aortic_arch"),
    (r"subpleural", "subpleural"),
    (r"periphera(?:l|lly)", "peripheral"),
    (r"axilla(?:ry)?", "axilla"),
    (r"chest wall", "chest_wall"),
    (r"scapula(?:r)?", "scapula"),
    (r"stern(?:um|al)", "sternum"),
    (r"paratracheal", "paratracheal"),
    (r"(?:descending |ascending )?(?:thoracic )?aorta", "aorta"),
    (r"lungs?|pulmonary|lung fields?|lung zones?|lung parenchyma|parenchymal?", "lung"),
)

SEVERITY_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"minimal|trace|minor|slight|slightly|subtle|tiny|very small", "minimal"),
    (r"small|smaller", "small"),
    (r"mild|mildly", "mild"),
    (r"moderate|moderately|moderate-sized|moderate size", "moderate"),
    (r"large|larger|big|massive|marked|markedly", "large"),
    (r"severe|severely", "severe"),
    (r"extensive", "extensive"),
    (r"focal|focus of|localized", "focal"),
    (r"diffuse|diffusely|widespread", "diffuse"),
    (r"patchy", "patchy"),
    (r"streaky|stranding|strandy", "streaky"),
    (r"subsegmental", "subsegmental"),
    (r"linear|discoid|plate-?like|platelike", "linear"),
    (r"calcified", "calcified"),
    (r"multiple|numerous|several|scattered", "multiple"),
    (r"few|a few|some", "few"),
)

CHANGE_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"new|newly|new since|developing", "new"),
    (r"unchanged|not changed|without change|no change", "unchanged"),
    (r"stable|stably|similar|again (?:seen|noted|identified|demonstrated)|redemonstrat\w+|"
     r"re-demonstrat\w+", "stable"),
    (r"improv\w+|decreas\w+ in size|less prominent|clearing", "improved"),
    (r"worse\w*|worsening|progress\w*", "worsened"),
    (r"increas\w+(?: in size)?|enlarging", "increased"),
    (r"decreas\w+|diminish\w+|smaller", "decreased"),
    (r"chronic|chronically|longstanding|long-standing", "chronic"),
    (r"old|remote|prior|previous", "old"),
    (r"healed|healing", "healed"),
    (r"persist\w*|residual|remaining", "persistent"),
)

DEVICE_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"pacemaker|pacer|cardiac device|pacing device", "pacemaker"),
    (r"defibrillator|aicd|icd", "defibrillator"),
    (r"endotracheal|et tube", "endotracheal_tube"),
    (r"tracheostomy", "tracheostomy"),
    (r"nasogastric|orogastric|enteric|feeding|dobhoff|ng tube|og tube", "nasogastric_tube"),
    (r"chest tube|thoracostomy|pigtail", "chest_tube"),
    (r"picc|central venous|central line|ij|jugular|subclavian|swan|dialysis", "central_line"),
    (r"port|port-?a-?cath|mediport", "port"),
    (r"sternotomy wires?|sternal wires?|cerclage", "sternotomy_wires"),
    (r"sternotomy|cabg|bypass", "sternotomy"),
    (r"clips?", "clips"),
    (r"stents?", "stent"),
    (r"valves?|valve replacement", "valve"),
    (r"hardware|screws?|plates?|rods?|anchors?|fixation", "hardware"),
    (r"drains?", "drain"),
    (r"leads?|wires?", "leads"),
    (r"vertebroplasty|kyphoplasty", "vertebroplasty"),
    (r"shunt", "shunt"),
    (r"ivc filter", "ivc_filter"),
    (r"catheters?", "catheter"),
)

_HEDGES: tuple[tuple[str, Hedge], ...] = (
    (r"exclude|rule|ruled|r/o|excluded", "cannot_exclude"),
    (r"suspic|concern|suspect|suggest", "suspected"),
    (r"probabl|likely|presum", "probable"),
)

#: Words that carry no content of their own once findings, triggers and modifiers are read.
FILLERS: frozenset[str] = frozenset("""
a an the is are was were be been being there this these that those it its which who of in on at
to from for by with within into onto over as and or also again otherwise noted seen identified
identifiable visualized visible demonstrated evident appreciated present appear appears appeared
appearing has have had now currently still some any both within limits normal size sized
contour contours silhouette overlying projecting projects projected over region regions area
areas zone zones aspect portion portions lobe lobes field fields lung lungs pulmonary chest
radiograph radiographs film films view views frontal lateral pa ap examination exam study
studies image images compared comparison prior previous since from than consistent compatible
with likely most represent represents representing reflect reflects reflecting due secondary
related suggesting suggests suggestive could may might be possibly possible probably probable
no not without negative free clear of evidence signs sign definite definitely definitive
significant significantly appreciable acute acutely visualized obvious gross grossly
overt focal airspace air space disease process abnormality abnormalities finding findings
specifically again demonstrated shows show showing shown measuring measures measure approximately
about up mm cm x s e g i small there's is the changes change noted note interval further
upon without grossly essentially mildly slightly new old the mid its their well be
thoracic intact appearance appearing configuration sided seen near level abnormal
""".split())

_WORD = re.compile(r"[a-z][a-z'/-]*|\d+(?:\.\d+)?")


@dataclass
class ParsedSentence:
    """One English sentence, what it states, and the words it could not account for."""

    text: str
    statements: list[Statement] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.statements) and not self.unknown


def _compile(table: tuple[tuple[str, str], ...]) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(rf"(?<![\w-])(?:{p})(?![\w-])"), v) for p, v in table]


_NORMALS = _compile(NORMAL_PATTERNS)
_SIDES = _compile(SIDES)  # type: ignore[arg-type]
_ZONES = _compile(ZONE_PATTERNS)
_SEVERITY = _compile(SEVERITY_PATTERNS)
_CHANGE = _compile(CHANGE_PATTERNS)
_DEVICES = _compile(DEVICE_PATTERNS)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s?(?:x\s?\d+(?:\.\d+)?\s?)?(mm|cm)\b")
_C = RULES_EN.compiled
assert _C is not None
_TRIGGERS = [p for p in (_C.negation_pre, _C.negation_post, _C.uncertain_pre, _C.uncertain_post,
                         _C.pseudo, _C.terminators) if p is not None]


def clean(sentence: str) -> str:
    """The sentence without de-identification tokens and without its final stop."""
    text = _NOISE.sub(" ", _DEID.sub(" ", sentence))
    text = re.sub(r"(?i)\bwell-(expanded|inflated|aerated)", r"well \1", text)
    return " ".join(text.split()).strip(" .")


def _hedge(trigger: str | None) -> Hedge:
    for pattern, hedge in _HEDGES:
        if trigger and re.search(pattern, trigger):
            return hedge
    return "possible"


def parse_sentence(sentence: str) -> ParsedSentence:
    """What one English sentence states; ``unknown`` lists the words left unexplained."""
    text = clean(sentence)
    result = ParsedSentence(text)
    if not text:
        return result
    folded = fold(text)
    used = [False] * len(folded)

    def take(start: int, end: int) -> None:
        for i in range(start, end):
            used[i] = True

    def free(start: int, end: int) -> bool:
        return not any(used[start:end])

    # Findings from the English labeler, in sentence order.
    mentions: list[tuple[int, int, str, str, str | None]] = []
    cursor = 0
    for m in get_labeler("en").mentions(text, sections=False):
        if m.finding == "no_finding":
            continue
        at = folded.find(fold(m.text), 0)
        while at != -1 and not free(at, at + len(m.text)):
            at = folded.find(fold(m.text), at + 1)
        if at == -1:
            at = min(cursor, len(folded))
        end = min(at + len(m.text), len(folded))
        mentions.append((at, end, m.finding, m.presence, m.trigger))
        take(at, end)
        cursor = at
    mentions.sort(key=lambda item: item[0])
    for pattern, normal in _NORMALS:
        for m in pattern.finditer(folded):
            if m.end() > m.start() and free(m.start(), m.end()):
                result.statements.append(Statement(normal=normal))
                take(m.start(), m.end())
    for pattern in _TRIGGERS:
        for m in pattern.finditer(folded):
            take(m.start(), m.end())

    mods: list[tuple[int, str, str]] = []  # position, kind, value

    def collect(table: list[tuple[re.Pattern[str], str]], kind: str) -> None:
        for pattern, value in table:
            for m in pattern.finditer(folded):
                if free(m.start(), m.end()):
                    mods.append((m.start(), kind, value))
                    if kind == "zone" and m.group().startswith("bi"):
                        mods.append((m.start(), "side", "bilateral"))  # "bibasilar"
                    take(m.start(), m.end())

    collect(_ZONES, "zone")
    collect(_SIDES, "side")  # type: ignore[arg-type]
    collect(_SEVERITY, "severity")
    collect(_CHANGE, "change")
    for m in _SIZE.finditer(folded):
        value = float(m.group(1)) * (10.0 if m.group(2) == "cm" else 1.0)
        mods.append((m.start(), "size", str(value)))
        take(m.start(), m.end())
    # Devices are read inside the support-device mentions only.
    devices: dict[int, str] = {}
    for start, end, key, _, _ in mentions:
        if key == "support_devices":
            for pattern, device in _DEVICES:
                if pattern.search(folded[start:end]):
                    devices[start] = device
                    break

    unknown = [
        w for w in _WORD.findall("".join(" " if used[i] else ch for i, ch in enumerate(folded)))
        if w not in FILLERS and not w.replace(".", "").isdigit()
    ]
    result.unknown = unknown

    # Each modifier goes to the nearest finding mention (ties: the one it precedes).
    attached: dict[int, list[tuple[str, str]]] = {i: [] for i in range(len(mentions))}
    for pos, kind, value in mods:
        if not mentions:
            break
        best = min(
            range(len(mentions)),
            key=lambda i: (min(abs(pos - mentions[i][0]), abs(pos - mentions[i][1])),
                           0 if pos < mentions[i][0] else 1),
        )
        attached[best].append((kind, value))
    for i, (start, _end, key, presence, trigger) in enumerate(mentions):
        if (presence == "uncertain" and trigger and "suggest" in trigger
                and re.search(r"\b(?:no|without)\b", folded[:start])):
            presence = "absent"  # "no focal opacity to suggest pneumonia"
        result.statements.append(_statement(key, presence, trigger, attached[i],
                                            devices.get(start), folded[start:_end]))
    return result


def _statement(
    key: str,
    presence: str,
    trigger: str | None,
    mods: list[tuple[str, str]],
    device: str | None,
    mention: str,
) -> Statement:
    zone = next((v for k, v in mods if k == "zone"), None)
    sides = {v for k, v in mods if k == "side"}
    side: Side | None = None
    if "bilateral" in sides or {"right", "left"} <= sides:
        side = "bilateral"
    elif sides:
        side = next(iter(sides))  # type: ignore[assignment]
    severity = tuple(dict.fromkeys(v for k, v in mods if k == "severity"))
    changes = [v for k, v in mods if k == "change"]
    change = changes[0] if changes else None
    if presence == "absent" and trigger and re.search(r"resol|cleared|remov", trigger):
        change = "resolved"
    size = next((float(v) for k, v in mods if k == "size"), None)
    plural = bool(re.search(r"s$", mention)) and not re.search(r"(?:sis|ss|us|xis|ax)$", mention) and key not in (
        "pneumothorax", "emphysema", "fibrosis", "scoliosis", "kyphosis", "tuberculosis",
        "bronchiectasis", "spondylosis", "hernia",
    )
    if severity and "multiple" in severity:
        plural = True
    if zone in ("lung",) and side is None:
        zone = None
    location = Location(side, zone, plural_zone=False) if (side or zone) else None
    hedge = _hedge(trigger) if presence == "uncertain" else None
    normal_style = trigger == "normal"
    return Statement(
        finding=key,
        presence=presence,  # type: ignore[arg-type]
        hedge=hedge,
        location=location,
        severity=severity,
        change=change,
        device=device,
        plural=plural,
        size_mm=size,
        normal_style=normal_style,
    )
