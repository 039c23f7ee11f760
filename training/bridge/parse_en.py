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
    r"and configuration|in contour|and contour|and shape|in shape)\b",
    re.IGNORECASE,
)

_BE = r"(?:is |are |appear |appears |remain |remains )?"
_OK = r"(?:normal|unremarkable|within normal limits|stable)"
_MEDIASTINUM = r"(?:cardio ?)?mediastin(?:um|al (?:contours?|silhouettes?|structures?))"
_ABNORMALITY = r"(?:abnormalit(?:y|ies)|findings?|injur(?:y|ies)|lesions?|process|disease)"

#: Statements of normal anatomy (no finding of the set): pattern on folded text -> normal id.
NORMAL_PATTERNS: tuple[tuple[str, str], ...] = (
    (rf"(?:the )?lungs? {_BE}(?:clear|well aerated|free of (?:focal )?(?:disease|infiltrates?))"
     r"(?: bilaterally| of (?:focal )?(?:airspace )?disease)?(?: and (?:well )?expanded)?",
     "lungs_clear"),
    (r"(?:the )?lungs? (?:are |is )?(?:well )?expanded and clear", "lungs_clear"),
    (r"clear lungs?", "lungs_clear"),
    (r"(?:stable )?(?:post-?surgical|post-?operative|surgical) changes?", "postsurgical"),
    (r"(?:(?:pa|frontal|two|2) (?:and lateral )?(?:views?|radiographs?|projections?) of the chest "
     r"(?:were|was) obtained|(?:the )?(?:examination|exam|study) consists of (?:pa|frontal) and "
     r"lateral (?:views?|radiographs?) of the chest|(?:pa|frontal) and lateral (?:chest )?"
     r"(?:examination|exam|views?) (?:was|were) obtained)", "technique_pa_lateral"),
    (rf"(?:the )?(?:heart|cardiac silhouette|cardiac|heart size)(?:,| and) (?:the )?{_MEDIASTINUM}"
     rf"(?:,? and (?:the )?(?:hila|hilar contours?))? {_BE}{_OK}",
     "heart_mediastinum_normal"),
    (rf"(?:the )?{_MEDIASTINUM} {_BE}(?:{_OK}|midline)", "heart_mediastinum_normal"),
    (rf"(?:the )?(?:cardiac|cardio ?mediastinal|cardiopulmonary) (?:silhouettes?|contours?) "
     rf"{_BE}{_OK}(?: in size)?",
     "heart_mediastinum_normal"),
    (rf"(?:normal|unremarkable) {_MEDIASTINUM}", "heart_mediastinum_normal"),
    (r"normal heart", "heart_normal_size_unstated"),
    (r"(?:the )?heart size (?:is )?(?:at )?(?:the )?upper limits? of normal|(?:the )?heart size "
     r"(?:is )?(?:upper )?(?:normal|borderline)(?: enlarged)?|borderline heart size",
     "heart_upper_normal"),
    (r"(?:the )?pleural spaces? (?:are |is )?(?:clear|normal|unremarkable)", "pleura_normal"),
    (r"(?:the )?lungs? (?:are |is )?(?:well |adequately |fully )?(?:expanded|inflated|aerated)"
     r"(?: and clear)?", "lungs_expanded"),
    (r"(?:the )?(?:visualized |imaged |included )?(?:osseous|bony|skeletal|bone) "
     rf"(?:structures?|thorax|elements?)?\s?(?:of the (?:thorax|chest) )?{_BE}"
     r"(?:structurally )?(?:intact|normal|unremarkable|within normal limits|"
     r"without (?:acute |focal )?abnormalit(?:y|ies))", "bones_intact"),
    (r"(?:the )?(?:bony|osseous|skeletal) (?:structures|elements) (?:reveal|show|demonstrate) no "
     r"(?:acute )?(?:abnormalit(?:y|ies)|fractures?)", "bones_no_acute"),
    (r"(?:no|without|negative for) (?:acute |displaced |focal )?(?:or destructive )?"
     rf"(?:bony|osseous|skeletal|bone) {_ABNORMALITY}", "bones_no_acute"),
    (r"(?:the )?trachea (?:is )?(?:midline|normal|central|unremarkable)|midline trachea",
     "trachea_midline"),
    (r"(?:the )?(?:pulmonary )?(?:vascularity|vasculature|vascular markings) "
     r"(?:is |are |appears? )?(?:within normal limits|normal|unremarkable)", "vasculature_normal"),
    (r"normal (?:pulmonary )?(?:vascularity|vasculature|vascular markings)", "vasculature_normal"),
    (r"(?:no|without) (?:(?:radiographic |x-?ray )?evidence of )?(?:an )?(?:active|acute)\s?"
     r"(?:cardiopulmonary|cardiac or pulmonary|pulmonary|intrathoracic|cardiothoracic|chest|"
     r"thoracic|cardiopulmonary or osseous|osseous or cardiopulmonary|cardiac|lung)?\s?"
     r"(?:disease|process|abnormalit(?:y|ies)|findings?|pathology|pulmonary disease|changes?|"
     r"radiographic abnormalit(?:y|ies))", "no_acute_disease"),
    (r"(?:normal|negative|unremarkable) (?:chest|chest x-?ray|chest radiographs?|"
     r"radiographs? of the chest|examination|exam|study|radiographs?|x-?ray)", "normal_study"),
    (r"(?:the )?(?:chest|examination|study) (?:is )?(?:normal|unremarkable|negative)",
     "normal_study"),
    (r"(?:the )?soft tissues? (?:are |is )?(?:normal|unremarkable|within normal limits)",
     "soft_tissues_normal"),
    (r"(?:the )?(?:hemi)?diaphragms? (?:are |is )?(?:normal|unremarkable|intact)",
     "diaphragm_normal"),
    (rf"(?:the )?(?:hila|hilar (?:contours?|structures?|regions?)) {_BE}"
     r"(?:normal|unremarkable|within normal limits)", "hila_normal"),
    (r"(?:the )?(?:thoracic )?aorta (?:is )?(?:normal|unremarkable)", "aorta_normal"),
    (r"(?:the )?(?:visualized )?upper abdomen (?:is )?(?:normal|unremarkable)",
     "upper_abdomen_normal"),
    (r"(?:no|without) (?:focal )?(?:pleural|parenchymal) (?:abnormalit(?:y|ies)|disease)",
     "pleura_normal"),
    (r"(?:there is |there has been )?no (?:(?:significant|appreciable|interval|substantial) ){0,2}"
     r"(?:change|changes)(?: (?:from|since|compared to|compared with|in comparison to) "
     r"(?:the )?(?:prior|previous|last)(?: (?:study|examination|exam|radiographs?|films?))?)?",
     "unchanged_study"),
    (r"(?:stable|unchanged) (?:chest|examination|exam|appearance|study)(?: of the chest)?",
     "unchanged_study"),
)

SIDES: tuple[tuple[str, str], ...] = (
    (r"bilateral(?:ly)?|both|biapical|bibasilar|bibasal|bihilar", "bilateral"),
    (r"right(?:-| )sided|right|rt", "right"),
    (r"left(?:-| )sided|left|lt", "left"),
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
    (r"ribs", "ribs"),
    (r"rib", "rib"),
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
    (r"carina", "carina"),
    (r"svc|superior vena cava", "svc"),
    (r"cavoatrial junction|cavo-atrial junction", "cavoatrial_junction"),
    (r"right atrium|right atrial", "right_atrium"),
    (r"right ventricle|right ventricular", "right_ventricle"),
    (r"stomach|gastric", "stomach"),
    (r"(?:descending |ascending )?(?:thoracic )?aort(?:a|ic)", "aorta"),
    (r"mediastin(?:um|al)", "mediastinum"),
    (r"lungs?|pulmonary|lung fields?|lung zones?|lung parenchyma|parenchymal?", "lung"),
)

SEVERITY_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"minimal|trace|minor|slight|slightly|subtle|tiny|very small", "minimal"),
    (r"small", "small"),
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
    (r"displaced", "displaced"),
    (r"alveolar", "alveolar"),
    (r"dual[- ]chamber|dual[- ]lead", "dual_chamber"),
    (r"adjacent", "adjacent"),
    (r"suspicious", "suspicious"),
    (r"multiple|numerous|several|scattered", "multiple"),
    (r"few|a few", "few"),
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
    (r"old|remote|prior", "old"),
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

ACCESS_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"(?:internal )?jugular|ij", "jugular"),
    (r"subclavian", "subclavian"),
    (r"femoral", "femoral"),
)
RELATION_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"above", "above"),
    (r"below", "below"),
)
#: Zones where a device's tip lies.
TIP_ZONES = frozenset({
    "carina", "svc", "cavoatrial_junction", "right_atrium", "right_ventricle", "stomach",
})

_HEDGES: tuple[tuple[str, Hedge], ...] = (
    (r"exclude|rule|ruled|r/o|excluded", "cannot_exclude"),
    (r"suspic|concern|suspect|suggest", "suspected"),
    (r"probabl|likely|presum", "probable"),
)

#: Words that carry no content of their own once findings, triggers and modifiers are read.
_FILLER_WORDS = """
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
thoracic intact appearance appearing configuration sided seen near level abnormal degenerative
typical underlying indicate indicates indicating tip tips terminates terminating terminate
ends projects positioned place courses coursing
extends via distal leads wires
"""
FILLERS: frozenset[str] = frozenset(_FILLER_WORDS.split())

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
_SIDES = _compile(SIDES)
_ZONES = _compile(ZONE_PATTERNS)
_SEVERITY = _compile(SEVERITY_PATTERNS)
_CHANGE = _compile(CHANGE_PATTERNS)
_DEVICES = _compile(DEVICE_PATTERNS)
_ACCESS = _compile(ACCESS_PATTERNS)
_RELATION = _compile(RELATION_PATTERNS)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s?(?:x\s?\d+(?:\.\d+)?\s?)?(mm|cm)\b")
_C = RULES_EN.compiled
assert _C is not None
_TRIGGERS = [p for p in (_C.negation_pre, _C.negation_post, _C.uncertain_pre, _C.uncertain_post,
                         _C.pseudo, _C.terminators) if p is not None]


#: Subjects of a list of normal structures ("Heart size, mediastinal contour, and pulmonary
#: vascularity are within normal limits.") -> what each one states.
_SUBJECTS: tuple[tuple[str, Statement], ...] = (
    (r"heart(?: size)?|cardiac (?:size|silhouette|contours?)|cardiac",
     Statement("cardiomegaly", "absent", normal_style=True)),
    (r"(?:cardio ?)?mediastin(?:um|al (?:contours?|silhouettes?|structures?|width))",
     Statement("enlarged_cardiomediastinum", "absent", normal_style=True)),
    (r"(?:central )?(?:pulmonary )?(?:vascularity|vasculature|vascular (?:pattern|markings))",
     Statement(normal="vasculature_normal")),
    (r"hila|hilar (?:contours?|structures?)", Statement(normal="hila_normal")),
    (r"lungs?", Statement(normal="lungs_clear")),
    (r"(?:osseous|bony|skeletal) (?:structures|elements)|bones", Statement(normal="bones_intact")),
    (r"trachea", Statement(normal="trachea_midline")),
    (r"soft tissues", Statement(normal="soft_tissues_normal")),
    (r"(?:thoracic )?aorta", Statement(normal="aorta_normal")),
    (r"pleura|pleural spaces", Statement(normal="pleura_normal")),
)
_SUBJECT_ALT = "|".join(f"(?:{p})" for p, _ in _SUBJECTS)
_SUBJECT_LIST = (
    rf"(?:the )?(?:{_SUBJECT_ALT})(?:(?:,|,? and) (?:the )?(?:{_SUBJECT_ALT}))+"
)
_NORMAL_LIST = re.compile(
    rf"^(?:stable,? )?(?:(?P<a>{_SUBJECT_LIST}) (?:is |are |appear |appears |remain )?"
    r"(?:normal|unremarkable|within normal limits|stable|normal in size)"
    rf"|(?:normal|unremarkable) (?P<b>{_SUBJECT_LIST}))$"
)


def _normal_list(folded: str) -> list[Statement] | None:
    m = _NORMAL_LIST.match(folded)
    if m is None:
        return None
    subjects = re.split(r",? and |, ", m.group("a") or m.group("b"))
    out: list[Statement] = []
    for subject in subjects:
        subject = re.sub(r"^the ", "", subject.strip())
        for pattern, statement in _SUBJECTS:
            if re.fullmatch(pattern, subject):
                out.append(statement)
                break
        else:
            return None
    return out


def clean(sentence: str) -> str:
    """The sentence without de-identification tokens and without its final stop."""
    text = _NOISE.sub(" ", _DEID.sub(" ", sentence))
    text = re.sub(r"(?i)\bwell-(expanded|inflated|aerated)", r"well \1", text)
    text = re.sub(r"(?i)\bcardio[ -]mediastinal\b", "cardiomediastinal", text)
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
    listed = _normal_list(folded)
    if listed is not None:
        result.statements = listed
        return result
    used = [False] * len(folded)

    # Characters read by a mention may still name the location ("degenerative changes of the
    # thoracic spine"): zones may overlap mentions, nothing else may.
    in_mention = [False] * len(folded)

    def take(start: int, end: int) -> None:
        for i in range(start, end):
            used[i] = True

    def free(start: int, end: int, *, over_mentions: bool = False) -> bool:
        return not any(
            used[i] and not (over_mentions and in_mention[i]) for i in range(start, end)
        )

    # Findings from the English labeler, in sentence order.
    mentions: list[tuple[int, int, str, str, str | None]] = []
    signs: set[tuple[int, str]] = set()  # (start, finding) of the indirect mentions
    cursor = 0
    for mention in get_labeler("en").mentions(text, sections=False):
        if mention.finding == "no_finding":
            continue
        needle = fold(mention.text)
        at = folded.find(needle, 0)
        while at != -1 and any(k == mention.finding and s0 == at for s0, _, k, _, _ in mentions):
            at = folded.find(needle, at + 1)
        if at == -1:
            at = min(cursor, len(folded))
        end = min(at + len(needle), len(folded))
        mentions.append((at, end, mention.finding, mention.presence, mention.trigger))
        if not mention.direct:
            signs.add((at, mention.finding))
        take(at, end)
        in_mention[at:end] = [True] * (end - at)
        cursor = at
    mentions.sort(key=lambda item: item[0])
    # "<device> ... tip in the SVC": the labeler names the tip as a device of its own (for
    # de-identified devices); here it is the position of the device already named.
    mentions = [
        m for i, m in enumerate(mentions)
        if not (m[2] == "support_devices" and folded[m[0]:m[1]].startswith("tip")
                and any(p[2] == "support_devices" for p in mentions[:i]))
    ]
    # A sign of a finding the sentence also names ("blunting ..., which may reflect small
    # effusions") is not a second statement of it: the finding is what is said of it by name,
    # as the labeler reads it. When the name is denied ("blunting ..., without effusion") the
    # sign states something the statement cannot carry beside the denial, so the sentence is
    # not realised.
    named: dict[str, set[str]] = {}
    for item in mentions:
        if (item[0], item[2]) not in signs:
            named.setdefault(item[2], set()).add(item[3])
    denied_signs = [folded[m[0]:m[1]] for m in mentions
                    if (m[0], m[2]) in signs and named.get(m[2]) == {"absent"}]
    mentions = [m for m in mentions if (m[0], m[2]) not in signs or m[2] not in named]
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
                if free(m.start(), m.end(), over_mentions=kind in ("zone", "side", "severity")):
                    several = re.search(r"(?:s|ices)$|^hila$", m.group())
                    if kind == "zone" and value != "rib" and several:
                        value += "+"  # "upper lobes", "bases", "apices", "hila": several
                    mods.append((m.start(), kind, value))
                    if kind == "zone" and m.group().startswith("bi"):
                        mods.append((m.start(), "side", "bilateral"))  # "bibasilar"
                    take(m.start(), m.end())

    collect(_ACCESS, "access")
    collect(_ZONES, "zone")
    collect(_RELATION, "relation")
    collect(_SIDES, "side")
    collect(_SEVERITY, "severity")
    collect(_CHANGE, "change")
    for m in _SIZE.finditer(folded):
        size = float(m.group(1)) * (10.0 if m.group(2) == "cm" else 1.0)
        mods.append((m.start(), "size", str(size)))
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
    if not mentions:
        # Location, size or severity with no finding to carry them would be lost.
        unknown += [value for _, kind, value in mods if kind in ("zone", "size", "severity")
                    and value.rstrip("+") not in ("lung", "focal")]
    result.unknown = unknown + [w for sign in denied_signs for w in sign.split()[:1]]

    # English puts adjectives before the noun ("small left effusion") and places, sizes and
    # changes either before it or after it ("effusion in the left base", "... is unchanged").
    attached: dict[int, list[tuple[str, str]]] = {i: [] for i in range(len(mentions))}
    for pos, kind, value in mods:
        target = _attach(folded, mentions, pos, kind, value)
        if target is not None and kind in ("access", "relation") and (
                mentions[target][2] != "support_devices"):
            result.unknown.append(value)
        elif target is not None:
            attached[target].append((kind, value))
        elif mentions and not (kind == "change" and value == "old"):
            # ("prior" of "unchanged from prior" speaks of the study, not of a finding.)
            result.unknown.append(value)  # a modifier no finding can carry would be lost
    # "The aorta is tortuous and calcified": "calcified" is the atheromatosis, not a quality of
    # the elongation (nor of anything else in the sentence).
    if any(item[2] == "aortic_atheromatosis" for item in mentions):
        for i, item in enumerate(mentions):
            if item[2] != "aortic_atheromatosis":
                attached[i] = [kv for kv in attached[i] if kv != ("severity", "calcified")]
    for i, (start, _end, key, presence, trigger) in enumerate(mentions):
        if (presence == "uncertain" and trigger and "suggest" in trigger
                and re.search(r"\b(?:no|without)\b", folded[:start])):
            presence = "absent"  # "no focal opacity to suggest pneumonia"
        result.statements.append(_statement(key, presence, trigger, attached[i],
                                            devices.get(start), folded[start:_end]))
    return result


_POSTPOSED = re.compile(r"\b(?:in|at|of|within|near|involving|along|over|on|is|are|remains?|"
                        r"appears?|has|have|been|seen|noted|with)\b|,")


def _attach(
    folded: str,
    mentions: list[tuple[int, int, str, str, str | None]],
    pos: int,
    kind: str,
    value: str,
) -> int | None:
    """Index of the mention a modifier at ``pos`` belongs to."""
    if not mentions:
        return None
    nxt = next((i for i, m in enumerate(mentions) if m[0] >= pos), None)
    prev = next((i for i in range(len(mentions) - 1, -1, -1) if mentions[i][1] <= pos), None)
    if prev is None and nxt is None:  # inside a mention ("degenerative ... thoracic spine")
        return min(range(len(mentions)), key=lambda i: abs(pos - mentions[i][0]))
    if kind == "change" and value == "old":
        # "old"/"prior" qualifies the finding right after it ("prior granulomatous disease"),
        # otherwise it speaks of the previous study ("not seen on prior").
        if nxt is not None and len(folded[pos : mentions[nxt][0]].split()) <= 3:
            return nxt
        return None
    if kind == "severity":
        return nxt if nxt is not None else prev
    if prev is not None and (nxt is None or _POSTPOSED.search(folded[mentions[prev][1] : pos])):
        return prev
    return nxt if nxt is not None else prev


def _statement(
    key: str,
    presence: str,
    trigger: str | None,
    mods: list[tuple[str, str]],
    device: str | None,
    mention: str,
) -> Statement:
    tips: tuple[str, ...] = ()
    if key == "support_devices":
        tips = tuple(dict.fromkeys(v.rstrip("+") for k, v in mods
                                   if k == "zone" and v.rstrip("+") in TIP_ZONES))
        mods = [(k, v) for k, v in mods if not (k == "zone" and v.rstrip("+") in TIP_ZONES)]
    access = next((v for k, v in mods if k == "access"), None)
    relation = next((v for k, v in mods if k == "relation"), None)
    zone = next((v for k, v in mods if k == "zone"), None)
    plural_zone = zone is not None and zone.endswith("+")
    if zone is not None:
        zone = zone.rstrip("+")
    if zone == "ribs":
        zone, plural_zone = "rib", True
    sides = {v for k, v in mods if k == "side"}
    side: Side | None = None
    if "bilateral" in sides or {"right", "left"} <= sides:
        side = "bilateral"
    elif "right" in sides:
        side = "right"
    elif "left" in sides:
        side = "left"
    severity = tuple(dict.fromkeys(v for k, v in mods if k == "severity"))
    if key in ("calcification", "aortic_atheromatosis", "pleural_other"):
        severity = tuple(v for v in severity if v != "calcified")  # said by the noun itself
    changes = [v for k, v in mods if k == "change"]
    change = changes[0] if changes else None
    if presence == "absent" and trigger and re.search(r"resol|cleared|remov", trigger):
        change = "resolved"
    size = next((float(v) for k, v in mods if k == "size"), None)
    tip_mm = None
    if tips and relation is not None and size is not None:
        tip_mm, size = size, None
    english_plural = mention.endswith("s") and not re.search(r"(?:sis|ss|us|xis|ax)$", mention)
    plural = english_plural and key not in (
        "pneumothorax", "emphysema", "fibrosis", "scoliosis", "kyphosis", "tuberculosis",
        "bronchiectasis", "spondylosis", "hernia",
    )
    if severity and "multiple" in severity:
        plural = True
    if zone == "rib" and plural:
        plural_zone = True  # "rib fractures": several ribs
    if zone in ("lung",) and side is None:
        zone = None
    location = Location(side, zone, plural_zone=plural_zone) if (side or zone) else None
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
        tip=tips,
        tip_mm=tip_mm,
        tip_relation=relation if tip_mm is not None else None,  # type: ignore[arg-type]
        access=access,  # type: ignore[arg-type]
    )
