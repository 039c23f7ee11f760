"""English labeling rules for chest radiograph reports.

In the spirit of the CheXpert labeler (Irvin et al. 2019) and NegEx (Chapman et al. 2001):
phrases that name each finding, triggers that negate it or make it uncertain, and words that
end a trigger's reach. Written on folded text: lower case, no accents.
"""

from __future__ import annotations

from engine.labeler.rules import LanguageRules

# One word and its space, for "up to n words" gaps (a negation inside a mention still counts).
_W = r"(?:[\w-]+ )"

MENTIONS: dict[str, tuple[str, ...]] = {
    "enlarged_cardiomediastinum": (
        r"(?:enlarged|widened|widening of the|prominent|enlargement of the) "
        r"(?:superior |upper )?(?:cardio)?mediastin\w*",
        r"(?:cardio)?mediastin\w* (?:silhouette |contours? |width )?"
        r"(?:and (?:the )?(?:[\w-]+ )?(?:structures|contours?|hila) )?"
        rf"(?:is |are |appears? |remains? )?{_W}{{0,2}}(?:widen\w*|enlarg\w*|prominen\w*)",
        # The paratracheal stripe is the right edge of the mediastinum.
        r"paratracheal (?:[\w-]+ ){0,2}(?:prominence|widening|fullness|enlargement)",
        r"(?:prominence|widening|fullness) (?:of|adjacent to) (?:the )?(?:right |left )?"
        r"paratracheal",
        r"mediastinal (?:widening|enlargement|prominence)",
        r"prominence of (?:the )?(?:superior )?(?:cardio)?mediastin\w*",
    ),
    "cardiomegaly": (
        r"cardiomegaly",
        r"(?:heart|cardiac silhouette|cardiac shadow|heart size|cardiac size|cardiac contour)"
        rf" (?:is |are |appears? |remains? |size is )?{_W}{{0,2}}(?:enlarged|increased|large)",
        r"(?:enlarged|large) (?:heart|cardiac silhouette|cardiac shadow)",
        r"enlargement of the (?:heart|cardiac silhouette|cardiac shadow)",
        r"cardiac enlargement",
        # Borderline: a mention that carries its own hedge (uncertain).
        r"borderline (?:heart|cardiac) (?:size|silhouette|contour|enlargement)",
        r"borderline enlarged (?:heart|cardiac silhouette|cardiac contour)",
        r"(?:heart|heart size|cardiac silhouette|cardiac size|cardiac contour) "
        r"(?:is |are |appears? |remains? )?(?:[\w-]+ ){0,2}borderline",
        # "top normal to mildly enlarged": a borderline degree, uncertain by its own trigger.
        r"(?:heart|heart size|cardiac silhouette|cardiac size|cardiac contour) "
        r"(?:is |are |appears? |remains? )?(?:at the )?(?:top|upper limits? of|high) normal "
        r"(?:to|or) (?:[\w-]+ )?(?:enlarged|large)",
        r"(?:cardiothoracic ratio|ctr) (?:is |are |appears? |remains? )?(?:[\w-]+ ){0,2}"
        r"(?:increased|enlarged|raised|elevated)",
    ),
    "lung_opacity": (
        r"opacit(?:y|ies)",
        r"opacification",
        r"air ?space (?:disease|opacit(?:y|ies)|process)",
        r"densit(?:y|ies)",
        r"haziness",
        r"(?:air ?space |alveolar |patchy )?shadowing",
        r"hazy",
    ),
    "lung_lesion": (
        r"lesions?",
        r"cavitary",
        r"cavitation",
        r"cavit(?:y|ies)",
    ),
    "edema": (
        r"o?edema",
        r"(?:pulmonary |vascular |venous )congestion",
        r"congestive heart failure",
        r"(?:early |mild )?(?:heart|cardiac) failure",
        r"(?:pulmonary )?vascula(?:rity|ture) (?:is |are )?(?:[\w-]+ )?"
        r"(?:prominent|engorged|congested)",
        r"chf",
        # Signs of venous congestion, counted as edema as CheXpert does.
        r"(?:central |pulmonary |perihilar )?vascular (?:prominence|engorgement|indistinctness|"
        r"redistribution|cephalization)",
        r"(?:pulmonary )?venous (?:hypertension|engorgement|congestion)",
        r"cephalization",
        r"prominen\w* (?:of (?:the )?)?(?:central |pulmonary |lung |perihilar )?vascul\w*",
        r"indistinct (?:central )?(?:pulmonary )?(?:vascular|vessels?)\w*",
    ),
    "consolidation": (r"consolidat\w*",),
    "pneumonia": (
        r"pneumonias?",
        r"bronchopneumonia",
        r"pneumonitis",
        r"infectio(?:n|ns|us)",
        r"infectious process",
    ),
    "atelectasis": (
        r"atelecta\w*",
        r"(?:lobar|segmental|lung|partial) collapse",
        # "Collapse" is the British and Australian word for atelectasis; a collapsed vertebra
        # is excluded below.
        r"collapse",
        r"collapsed (?:[\w-]+ ){0,2}(?:lobe|lung|segment)",
    ),
    "pneumothorax": (r"pneumothora(?:x|ces)", r"hydropneumothorax"),
    "pleural_effusion": (
        r"(?:pleural )?effusions?",
        r"pleural fluid",
        r"hydropneumothora(?:x|ces)",
    ),
    "pleural_other": (
        r"pleural (?:plaques?|calcifications?|scarring)",
        r"fibrothorax",
        r"calcified pleura\w*",
    ),
    "fracture": (r"fractur\w*", r"fx"),
    "support_devices": (
        r"(?:endotracheal|et|enteric|nasogastric|ng|og|orogastric|chest|feeding|tracheostomy|"
        r"dobhoff|drainage|gastrostomy|jejunostomy|nephrostomy) tubes?",
        r"tracheostomy",
        r"picc",
        r"(?:lines|tubes) and (?:lines|tubes)",
        r"(?:cardiac|closure|electronic|implanted|implantable|occluder|occlusion) (?:[\w-]+ )?"
        r"devices?",
        r"(?:picc|central venous|central|port-?a-?cath|swan-?ganz|ij|jugular|subclavian|dialysis|"
        r"venous|midline) (?:line|catheter)s?",
        r"catheters?",
        r"cordis",
        r"introducer(?: sheath)?",
        r"pacemakers?",
        r"pacers?",
        r"aicd",
        r"icds?",
        r"(?:nerve |vagal nerve )?\w*stimulators?",
        r"(?:cardiac |ecg |ekg )?monitor(?:ing)? (?:leads?|wires?|electrodes?)",
        r"electrodes?",
        # A de-identified device whose tip is described ("right chest XXXX tip in the SVC").
        r"tip (?:is |remains |again )?(?:visuali[sz]ed |seen |noted )?(?:projecting|projects|"
        r"overlying|overlies|terminating|terminates|in|at|within|near|over)",
        r"prosthe\w*",
        r"arthroplast\w*",
        r"defibrillators?",
        r"(?:pacing|pacer) (?:wires?|leads?)",
        r"sternotomy wires?",
        r"(?:median )?sternotomy",
        r"(?:surgical|vascular) clips?",
        r"clips?",
        r"stents?",
        r"(?:prosthetic|mechanical|artificial) (?:heart )?valves?",
        r"valve replacement",
        r"(?:chest|power|infusion) ?port",
        r"drains?",
        r"cerclage wires?",
        r"(?:orthopedic|surgical|spinal) hardware",
        r"hardware",
        r"ivc filter",
        r"shunt(?: tubing)?",
        r"tubing",
        r"(?:bone |suture )?anchors?",
        r"(?:ventricular|atrial|pacer|pacemaker|pacing|cardiac|transvenous) leads?",
        r"(?:pacemaker |pacer |defibrillator )?generator",
        r"(?:vertebro|kypho)plasty",
        r"(?:orthopedic |fixation |surgical )?(?:screws?|plates?|rods?)",
        # Surgical fusion of the spine: its hardware, or the fused segment itself.
        r"(?:spinal|spine|cervical|thoracic|lumbar|thoracolumbar|lumbosacral|vertebral|interbody|"
        r"surgical|postsurgical|postoperative|operative|anterior|posterior)"
        r"(?: [\w-]+){0,5} fusion",
        r"fusion (?:hardware|plates?|rods?|screws?|devices?)",
        r"acdf",
        r"sutures?",
        r"suture (?:lines?|material)",
        r"staples?",
    ),
    "infiltration": (r"infiltrat\w*",),
    "mass": (r"mass(?:es)?",),
    "nodule": (r"nodules?",),
    "emphysema": (r"emphysem\w*", r"bullae", r"bullous", r"bulla"),
    "fibrosis": (r"fibros\w*", r"fibrotic (?:changes?|lung disease)", r"honeycomb\w*"),
    "pleural_thickening": (
        r"pleural thickening",
        r"thickening of the (?:\w+ )?pleura",
        r"thickened pleura",
        r"pleural-?parenchymal thickening",
        # An apical cap is apical pleural thickening; the fissures are pleura too.
        r"(?:apical )?(?:pleural )?capping",
        r"apical (?:pleural )?caps?",
        r"(?:fissural|fissure) thickening",
        r"thickening of the (?:[\w-]+ ){0,2}fissures?",
        r"(?:effusions?|fluid) (?:versus|vs\.?|or|and/or) (?:pleural )?thickening",
    ),
    "hernia": (r"hiatal hernia", r"hiatus hernia", r"hernias?"),
    "hyperinflation": (
        r"hyperinflat\w*",
        r"hyper[- ]?expan\w*",
        r"over-?expan\w*",
        r"hyperaerat\w*",
        r"(?:over|hyper)-?distended",
        r"hyperdistention",
        r"flatten\w* (?:of (?:the|both) )?(?:posterior |anterior )?(?:hemi-?)?diaphragm\w*",
        r"(?:hemi-?)?diaphragms? (?:is |are )?flattened",
        r"(?:increased|large|high) lung volumes?",
        # A barrel chest: the signs of hyperinflation on the lateral view.
        r"(?:increased|enlarged|widened) (?:ap|anteroposterior|retrosternal) (?:chest )?"
        r"(?:diameter|air ?space|clear space|lucency)",
    ),
    "hypoinflation": (
        r"low lung volumes?",
        r"hypoinflat\w*",
        r"(?:decreased|diminished|reduced|low) (?:lung )?(?:volumes|inflation)",
        r"(?:poor|shallow|suboptimal|limited) (?:inspiratory effort|inspiration)",
        r"lungs? (?:are |is )?(?:\w+ )?hypoinflated",
        r"lung volumes? (?:is |are |appears? |remains? )?(?:[\w-]+ )?(?:low|decreased|reduced|"
        r"diminished|small)",
        r"(?:decreasing|lower|reduced) lung volumes?",
    ),
    "granuloma": (r"granulom\w*",),
    "calcification": (r"calcifi\w*", r"calcinosis"),
    "scoliosis": (
        r"\w*scolio\w*",
        r"(?:dextro|levo)(?:convex|curvature)\w*",
        rf"curvature (?:of )?(?:the )?{_W}{{0,2}}spine",
        r"spin(?:e|al) curvature",
    ),
    "kyphosis": (r"kyphos\w*", r"kyphotic"),
    "spondylosis": (
        r"spondylo\w*",
        # Arthritis of the spine, not of the shoulders.
        r"\w*arthri\w* (?:changes? )?(?:of |in |involving |within |along )?(?:the )?"
        r"(?:[\w-]+ ){0,2}(?:spine|spinal|vertebra\w*|facets?|discs?)",
        r"(?:spine|spinal|vertebral|facet|thoracic|lumbar|cervical) (?:[\w-]+ ){0,2}\w*arthri\w*",
        r"degenerative (?:\w+ ){0,3}(?:spine|spinal|vertebra\w*|thoracic|disc|endplate)\w*",
        r"degenerative changes?",
        r"degenerate changes?",
        r"degenerative disease",
        r"(?:spurring|spurs?|end ?plate changes?) (?:[\w-]+ ){0,3}(?:spine|spinal|vertebra\w*)",
        r"(?:spine|spinal|vertebral|thoracic) (?:[\w-]+ ){0,2}spurring",
        r"dish",
        r"osteophyt\w*",
        r"diffuse idiopathic skeletal hyperostosis",
    ),
    "aortic_elongation": (
        # "tortuous thoracic aorta", "tortuosity of the descending thoracic aorta"
        r"(?:tortu|elongat|unfold|ectati|ectasi)\w*,? (?:and [\w-]+ )?(?:of |in )?(?:the )?"
        r"(?:[\w-]+ ){0,3}aort\w*",
        # "the aorta is tortuous", "the thoracic aorta is calcified and mildly tortuous"
        r"aort\w* (?:[\w-]+ ){0,2}(?:is |are |appears? |remains? |demonstrates |shows )?"
        r"(?:[\w-]+ ){0,4}(?:tortu|elongat|unfold|ectati|ectasi)\w*",
    ),
    "aortic_atheromatosis": (
        r"atheroscleros\w*",
        r"atherosclerotic",
        r"atheromat\w*",
        # Calcification of the aorta (the project's convention: atheromatosis, not calcification).
        r"aort\w* (?:[\w-]+ ){0,2}(?:is |are |appears? |remains? |demonstrates |shows |with )?"
        r"(?:[\w-]+ ){0,3}calcifi\w*",
        r"calcifi\w*,? (?:and [\w-]+ )?(?:[\w-]+ ){0,5}aort\w*",
    ),
    "elevated_hemidiaphragm": (
        r"elevat\w* (?:of )?(?:the )?(?:right |left )?(?:hemi-?)?diaphragm\w*",
        r"(?:hemi-?)?diaphragm\w* (?:is |are |remains )?(?:\w+ )?elevat\w*",
        r"eventration",
    ),
    "scarring": (r"scar(?:ring|s)?", r"cicatri\w*", r"fibrotic (?:band|strand)s?"),
    "bronchiectasis": (r"bronchiecta\w*",),
    "interstitial_pattern": (
        r"interstitial (?:markings?|pattern|opacit\w*|opacif\w*|prominence|lung disease|disease|"
        r"changes?|thickening|abnormalit(?:y|ies))",
        # "interstitial and alveolar opacities", "interstitial pulmonary opacities"
        r"interstitial (?:and alveolar |pulmonary |lung |nodular |and airspace )(?:markings?|"
        r"pattern|opacit\w*|opacif\w*)",
        r"(?:prominen\w*|thicken\w*) (?:of )?(?:the )?(?:pulmonary )?interstiti\w*",
        r"reticul\w* (?:opacit\w*|markings?|pattern|changes?)",
        r"reticulonodular",
        r"(?:increased|prominent|coarse\w*) (?:interstitial |lung |bronchovascular )markings",
    ),
    "tuberculosis": (r"tubercul\w*", r"tb"),
}

NORMAL: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (
        r"(?:heart|cardiac silhouette|heart size|cardiac size)(?: and [\w ]{1,40}?)? "
        r"(?:is |are |appears? |remains? )?(?:within normal limits|normal|unremarkable)",
        r"normal (?:heart|cardiac) (?:size|silhouette|contour)",
        r"normal-sized heart",
        r"(?:cardiothoracic ratio|ctr)(?: and [\w ]{1,40}?)? "
        r"(?:is |are |appears? |remains? )?(?:within normal limits|normal|not enlarged)",
        r"normal (?:cardiothoracic ratio|ctr)",
    ),
    "enlarged_cardiomediastinum": (
        r"(?:cardio)?mediastinal (?:silhouette|contours?)(?: and [\w ]{1,40}?)? "
        r"(?:is |are |appears? |remains? )?(?:within normal limits|normal|unremarkable)",
        r"normal (?:cardio)?mediastinal (?:silhouette|contours?)",
    ),
    "pleural_effusion": (r"costophrenic (?:angles?|sulci) (?:are |is )?(?:sharp|clear)",),
    "hypoinflation": (
        r"(?:lungs? (?:are |is )?)?normally (?:inflated|expanded)",
        r"(?:lungs? (?:are |is |appears? |remains? )?)?well[- ](?:inflated|expanded|aerated)",
        r"lung volumes? (?:are |is |appears? |remains? )?(?:within normal limits|normal|"
        r"preserved|maintained)",
        r"normal lung volumes?",
    ),
    "hyperinflation": (
        r"(?:lungs? (?:are |is )?)?normally (?:inflated|expanded)",
        r"lung volumes? (?:are |is |appears? |remains? )?(?:within normal limits|normal)",
        r"normal lung volumes?",
    ),
}

#: Signs that point at a finding without naming it; they count only when the report does not
#: name the finding itself (see :class:`engine.labeler.rules.LanguageRules`).
INDIRECT: dict[str, tuple[str, ...]] = {
    "pleural_effusion": (
        r"blunting of (?:the )?(?:[\w-]+ ){0,2}costophrenic",
        r"costophrenic (?:[\w-]+ ){0,2}blunting",
        r"(?:costophrenic|cp) (?:angles?|sulc(?:us|i)|recess(?:es)?|xxxx) (?:is |are |remains? )?"
        r"(?:[\w-]+ ){0,2}blunt\w*",
        r"blunted (?:[\w-]+ ){0,2}(?:costophrenic|cp|sulc(?:us|i))",
        r"(?:sulc(?:us|i)) (?:is |are )?(?:[\w-]+ ){0,2}blunt\w*",
    ),
    "nodule": (r"nodular(?:ity)?", r"nodularit(?:y|ies)", r"fibronodular"),
    "mass": (r"mass-?like",),
    "atelectasis": (r"volume loss",),
    # Septal lines are a sign: "Kerley B lines suggestive of interstitial edema" hedges edema.
    "edema": (r"kerley b? ?lines",),
    # Crowded bronchovascular markings are what low lung volumes look like.
    "hypoinflation": (
        r"(?:bronchovascular|bronchopulmonary|vascular|bronchial) (?:[\w-]+ )?crowding",
        r"crowd\w* (?:of )?(?:the )?(?:central |basilar )?(?:bronchovascular|vascular) "
        r"(?:and interstitial )?markings",
    ),
}

EXCLUDE: dict[str, tuple[str, ...]] = {
    "pleural_effusion": (r"pericardial effusions?", r"joint effusions?"),
    "emphysema": (r"subcutaneous emphysema", r"soft tissue emphysema"),
    "fibrosis": (r"cystic fibrosis",),
    "lung_lesion": (
        r"(?:bony|osseous|bone|lytic|lucent|sclerotic|skeletal|blastic|skin|cutaneous|expansile) "
        r"(?:[\w-]+ )?lesions?",
        # A lesion of a bone is not a lung lesion; a mass lesion is a mass.
        r"lesions? (?:of|in|involving|within|along) (?:the )?(?:[\w-]+ ){0,3}(?:ribs?|humer\w*|"
        r"clavic\w*|scapul\w*|vertebra\w*|spine|sternum|bones?)",
        r"mass(?:-like)? lesions?",
        r"(?:thoracic|pleural|abdominal|peritoneal|chest|body) cavity",
    ),
    "calcification": (
        # What other findings already say: calcified granulomas, calcified aorta.
        r"calcifi(?:ed|c) (?:[\w-]+ ){0,2}granulom\w*",
        # "calcified right lower lobe 5 mm granuloma": only places and sizes in between
        r"calcified (?:(?:right|left|bilateral|upper|middle|lower|lobe|lung|midlung|mid|apical|"
        r"basilar|hilar|perihilar|stable|small|tiny|\d+ ?mm)[ -]){1,6}granulom\w*",
        r"granulomatous (?:[\w-]+ ){0,2}calcifi\w*",
        r"non-? ?calcified",
        r"granulom\w* (?:is |are )?calcified",
        r"aort\w* (?:[\w-]+ ){0,2}(?:is |are |appears? |remains? |demonstrates |shows |with )?"
        r"(?:[\w-]+ ){0,3}calcifi\w*",
        r"calcifi\w*,? (?:and [\w-]+ )?(?:[\w-]+ ){0,5}aort\w*",
        r"atherosclerotic (?:[\w-]+ ){0,2}calcifi\w*",
    ),
    "lung_opacity": (r"(?:bone|bony|mineral) densit(?:y|ies)",),
    # Degenerative changes of the shoulders and other joints are not of the spine.
    "spondylosis": (
        r"degenerative (?:[\w-]+ ){0,3}(?:of|in|involving|at|within|along) (?:the )?"
        r"(?:(?!spine |spinal |thoracic |lumbar |cervical |vertebra)[\w-]+ ){0,3}"
        r"(?:shoulders?|costochondral|acromioclavicular|ac|glenohumeral|sternoclavicular|joints?|"
        r"humer\w*|clavic\w*|hips?|knees?)",
        r"(?:shoulders?|acromioclavicular|ac joints?|glenohumeral|sternoclavicular) (?:joints? )?"
        r"(?:[\w-]+ ){0,2}degenerative (?:changes?|disease)",
    ),
    # A disclaimer ("fractures may not be demonstrated"), a history, or a broken device.
    "fracture": (
        r"fractur\w* (?:may|might|can|could) not be "
        r"(?:demonstrated|seen|visible|detected|identified)",
        r"history of (?:[\w-]+ ){0,2}fractur\w*",
        r"(?:catheter|line|wire|screw|lead|hardware|rod|plate)s? (?:[\w-]+ ){0,3}fractur\w*",
        r"fractur\w* of (?:the )?(?:[\w-]+ ){0,4}(?:screw|wire|lead|catheter|rod|plate)s?",
    ),
    # A nodular density the report explains as something else (granuloma, nipple, healing rib
    # fracture) is that thing.
    "nodule": (
        r"nodular (?:densit\w*|opacit\w*) (?:[\w-]+,? ){0,8}(?:consistent with|compatible with|"
        r"represents?|reflects?|from|due to|secondary to|probably|likely|most likely) (?:an? )?"
        r"(?:[\w-]+ ){0,3}(?:granulom\w*|nipple\w*|fractur\w*)",
        # A nodule read as a nipple is no nodule (one read as a granuloma still is).
        r"nodules? (?:[\w-]+,? ){0,8}(?:consistent with|compatible with|represents?|reflects?|"
        r"probably|likely|most likely|may represent|could represent|due to|from) (?:an? |the )?"
        r"(?:[\w-]+ ){0,2}nipples?",
    ),
    "hernia": (r"(?:inguinal|umbilical|ventral) hernias?",),
    "pneumonia": (
        r"(?:urinary|urinary tract) infection",
        r"(?:prior|old|previous|remote|healed) (?:[\w-]+ ){0,2}infection",
        r"granulomatous (?:infection|disease|process)",
    ),
    "atelectasis": (
        r"(?:vertebra\w*|body|bodies|spine|spinal|disc|tracheal|airway|circulatory) "
        r"(?:[\w-]+ ){0,2}collapse",
        r"collapse (?:of )?(?:the )?(?:[\w-]+ ){0,3}(?:vertebra\w*|body|bodies|[tl]\d+)",
    ),
    "support_devices": (
        r"(?:lobar|lung|partial) collapse",
        r"(?:breast|mammary) (?:prosthes\w*|implants?)",
    ),
}

NEGATION_PRE: tuple[str, ...] = (
    r"no",
    r"not",
    r"nor",
    r"without",
    r"negative for",
    r"free of",
    r"clear of",
    r"clear(?= (?:of )?(?:focal )?air ?space)",  # "lungs are clear airspace disease" (dictation)
    r"absence of",
    r"absent",
    r"no evidence of",
    r"no radiographic evidence of",
    r"no signs? of",
    r"rather than",
    r"resolution of",
    r"resolved",
    r"removal of",
    r"re-?expansion of",
    r"never",
    r"ruled out",
    r"exclude[sd]?",
    r"no longer",
)

NEGATION_POST: tuple[str, ...] = (
    r"(?:is|are|was|were) (?:not|no longer) (?:seen|identified|present|visuali[sz]ed|demonstrated|"
    r"evident|appreciated|noted|detected|visible)",
    r"not (?:seen|identified|present|visuali[sz]ed|demonstrated|evident|appreciated|detected)",
    r"(?:has|have) (?:resolved|cleared|been removed|re-?expanded)",
    r"(?:is|are) (?:absent|negative|gone)",
    # "Heart size and pulmonary vascular engorgement appear within limits of normal."
    r"appears? within (?:the )?(?:limits of normal|normal limits)",
    r"resolved",
    r"removed",
)

UNCERTAIN_PRE: tuple[str, ...] = (
    r"possible",
    r"possibly",
    r"probable",
    r"probably",
    r"likely",
    r"less likely",
    r"may (?:represent|be|reflect|indicate|relate to|have)",
    r"might (?:represent|be|reflect|indicate)?",
    r"could (?:represent|be|reflect|indicate)",
    r"questionable",
    r"question of",
    r"(?:a |some )?suggestion of",
    # "atelectasis is favored over pneumonia": both readings hedged (as in UNCERTAIN_POST).
    r"(?:is|are) (?:favou?red|preferred)",
    r"suspicious for",
    r"worrisome for",
    r"worrisome",
    r"raises? (?:the )?(?:possibility|question) of",
    r"possibility of",
    r"(?:could|may|might) (?:also )?(?:be|represent) (?:due to|related to|secondary to)",
    r"favou?r(?:ed|s)?",
    r"suspected",
    r"suspect",
    r"suggestive of",
    r"suggest(?:s|ing)?",
    r"to (?:suggest|indicate)",
    r"concerning for",
    r"concern for",
    r"cannot exclude",
    r"can not exclude",
    r"can't exclude",
    r"cannot rule out",
    r"can not rule out",
    r"cannot be (?:excluded|ruled out)",
    r"not (?:entirely |completely )?excluded",
    r"difficult to exclude",
    r"differential (?:diagnosis )?(?:includes?|including|considerations? include)",
    r"versus",
    r"vs\.?",
    r"presumably",
    r"presumed",
    r"equivocal",
    r"borderline",
    r"(?:at the )?(?:top|upper limits? of|high) normal (?:to|or)",
    r"rule out",
    r"(?:please )?correlate (?:clinically )?(?:for|as to)",
    r"(?:clinical )?correlation for",
    r"r/o",
    r"evaluate for",
    r"assess for",
    r"(?:evaluation|assessment) for",
    r"to exclude",
    r"not definitely",
    r"may",
)

UNCERTAIN_POST: tuple[str, ...] = (
    r"(?:should|must|needs? to|to) be (?:excluded|ruled out)",
    r"(?:cannot|can not|can't) be (?:entirely |completely |definitely |fully )?"
    r"(?:excluded|ruled out)",
    r"(?:may|might|could) (?:also |still )?be (?:present|seen|noted)",
    r"(?:is|are) (?:favou?red|preferred)",
    r"(?:is|are) not (?:entirely |completely )?(?:excluded|ruled out)",
    r"(?:is|are) (?:also )?(?:possible|suspected|questioned|likely|not excluded|considered)",
    r"(?:is|are) (?:felt to be |thought to be )?(?:less|more|much less) likely",
    r"not (?:entirely |completely )?excluded",
    r"(?:is|are|would be|remains?) (?:a |also a )?(?:consideration|possibility)",
    r"(?:is|are) (?:in|included in) the differential",
    r"(?:is|are) (?:an)?other consideration",
    r"\?",
    r"versus",
    r"vs\.?",
    # "widened, possibly due to rotation": the finding may be an artefact of the projection.
    r"(?:possibly|may be|might be|could be|perhaps) (?:due to|related to|accentuated by|"
    r"exaggerated by|from|secondary to) (?:the )?(?:[\w-]+ ){0,2}(?:rotation|positioning|"
    r"technique|projection|lung volumes|inspiration|portable)",
)

PSEUDO: tuple[str, ...] = (
    r"no (?:significant |interval |appreciable |substantial )?change",
    r"no (?:significant |interval )?(?:increase|decrease|worsening|improvement)",
    r"not (?:only|necessarily|significantly changed|changed)",
    r"without (?:significant |interval )?change",
    r"gram negative",
)

TERMINATORS: tuple[str, ...] = (
    r"but",
    r"however",
    r"although",
    r"though",
    r"except",
    r"aside from",
    r"apart from",
    r"other than",
    r"which",
    r"whereas",
    r"while",
    r"yet",
    r"there (?:is|are)",
    r"with (?:a |an )?(?:(?:bilateral|left|right|left-sided|right-sided) )?"
    r"(?:small|mild|moderate|large|minimal|new|persistent)",
    r";",
    r":",
    r", and (?:the|there|this|these)",
)

ALTERNATIVES: tuple[str, ...] = (r"or", r"and/or")

#: Uncertainty triggers through which an earlier negation reaches: "no focal opacity to suggest
#: pneumonia", "no findings suspicious for malignancy".
EVIDENTIAL: tuple[str, ...] = (
    r"to (?:suggest|indicate)",
    r"(?:a |some )?suggestion of",
    r"suggestive of",
    r"concerning for",
    r"concern for",
    r"worrisome for",
    r"suspicious for",
)

#: Uncertainty triggers that hedge only the reading of something seen (see
#: :class:`engine.labeler.rules.LanguageRules`): a probable or favoured reading, a borderline
#: degree, a named differential ("A versus B"). On the tuned IU reports MeSH indexes 244 of
#: the 279 findings read as probable (with "A or B" and "A/B") and 21 of the 250 read under the
#: other triggers ("may represent", "possibly", "suggest"), which is why they are told apart
#: (scripts/validate_labeler.py).
PROBABLE: tuple[str, ...] = (
    r"probable",
    r"probably",
    r"likely",
    r"(?:is|are) (?:also )?likely",
    r"presumably",
    r"presumed",
    r"favou?r(?:ed|s)?",
    r"(?:is|are) (?:favou?red|preferred)",
    r"borderline",
    r"(?:at the )?(?:top|upper limits? of|high) normal (?:to|or)",
    r"versus",
    r"vs\.?",
)

RULES_EN = LanguageRules(
    lang="en",
    mentions=MENTIONS,
    indirect=INDIRECT,
    normal=NORMAL,
    exclude=EXCLUDE,
    negation_pre=NEGATION_PRE,
    negation_post=NEGATION_POST,
    uncertain_pre=UNCERTAIN_PRE,
    uncertain_post=UNCERTAIN_POST,
    pseudo=PSEUDO,
    terminators=TERMINATORS,
    alternatives=ALTERNATIVES,
    evidential=EVIDENTIAL,
    probable=PROBABLE,
)
