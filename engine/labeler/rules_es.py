"""Spanish labeling rules for chest radiograph reports.

The vocabulary of Spanish radiology reports (as in PadChest): "condensación" for consolidation,
"pinzamiento del seno costofrénico", "no se descarta" for uncertainty, "sin" and "no se
observa" for negation. Written on folded text: lower case, accents removed ("neumotorax"
matches "neumotórax").
"""

from __future__ import annotations

from engine.labeler.rules import LanguageRules

_W = r"(?:[\w-]+ )"
#: "ICT" is how the cardiothoracic index is dictated more often than not.
_ICT = r"(?:indice cardiotoracico|ict)"
#: The costophrenic sinuses, also dictated as "SCF".
_SCF = r"(?:(?:senos?|angulos?) (?:costofrenic|costodiafragmatic)\w*|scf)"
_SCF_NOUN = r"(?:(?:senos? |angulos? )?(?:costofrenic|costodiafragmatic)\w*|scf)"
#: Normal without a negation word: "dentro de la normalidad", "en el límite alto de la
#: normalidad" (borderline is still read as normal), "en límites normales".
_NORMAL_RANGE = (
    r"(?:dentro de (?:la )?normalidad|(?:en|dentro de) (?:los )?limites normales|"
    r"en (?:el )?limite (?:alto |superior )?de (?:la )?normalidad)"
)

#: How a report explains a shadow as something else: "que corresponde a", "probablemente".
_EXPLAINED = (
    r"(?:corresponde\w*|en relacion con|compatibles? con|por|debid\w+ a|secundari\w+ a|"
    r"probablemente|probable|posiblemente|sugestiv\w+ de) "
    r"(?:a |al |con )?(?:un |una |el |la |los |las )?"
)

MENTIONS: dict[str, tuple[str, ...]] = {
    "enlarged_cardiomediastinum": (
        r"ensanchamiento (?:del )?mediastin\w*",
        r"ensanchamiento (?:de la silueta )?cardiomediastinic\w*",
        rf"mediastino (?:superior )?{_W}{{0,2}}(?:ensanchado|aumentado|prominente)",
        r"silueta cardiomediastinica (?:\w+ )?(?:aumentada|ensanchada|prominente)",
        r"lipomatosis mediastinica",
    ),
    "cardiomegaly": (
        r"cardiomegalia",
        rf"aumento (?:del? )?(?:la )?(?:tamano de la )?(?:silueta cardiaca|{_ICT}|"
        r"tamano cardiaco)",
        rf"(?:silueta cardiaca|{_ICT}|tamano cardiaco) {_W}{{0,2}}"
        r"(?:aumentad[oa]|agrandad[oa]|aumentado)",
        r"crecimiento de cavidades",
        rf"{_ICT} (?:>|mayor (?:de|que)|superior a) 0[,.]5\d*",
    ),
    "lung_opacity": (
        r"opacidad(?:es)?",
        r"aumento(?:s)? de densidad",
        r"densidad(?:es)?",
        r"patron alveolar",
        r"ocupacion (?:del )?espacio aereo",
        r"ocupacion alveolar",
        r"vidrio deslustrado",
    ),
    "lung_lesion": (
        r"lesion(?:es)?",
        r"cavitaci\w+",
        r"imagen(?:es)? cavitada\w*",
    ),
    "edema": (
        r"edema\w*",
        r"congestion (?:vascular|pulmonar|venosa)\w*",
        r"redistribucion vascular",
        r"insuficiencia cardiaca",
        r"hipertension venosa(?: pulmonar| capilar)?",
    ),
    "consolidation": (r"consolidaci\w+", r"condensaci\w+", r"consolidativ\w*"),
    "pneumonia": (
        r"neumonias?",
        r"bronconeumonia",
        # "proceso/foco neumónico", "condensación neumónica": the adjective names a pneumonia.
        r"neumonic[oa]s?",
        r"neumonitis",
        r"proceso infeccioso",
        r"infecci\w+",
        r"infeccios\w+",
    ),
    "atelectasis": (
        r"atelectasi\w*",
        r"atelectacia\w*",  # seseo in dictation
        r"colapso (?:pulmonar|lobar|segmentario)",
        r"colapso (?:parcial |completo |total |pasivo )?(?:del? )?(?:el |la )?"
        r"(?:pulmon|lobulo|segmento|lingula)\w*",
        r"perdida de volumen",
    ),
    "pneumothorax": (r"neumotorax", r"hidroneumotorax"),
    "pleural_effusion": (
        r"derrames? pleural\w*",
        r"derrames?",
        r"liquido pleural",
        rf"ocupacion (?:del? )?(?:los |ambos )?{_SCF_NOUN}",
        rf"{_SCF} (?:\w+ )?ocupados?",
    ),
    "pleural_other": (
        r"placas? pleural\w*",
        r"calcificaci\w+ pleural\w*",
        r"fibrotorax",
    ),
    "fracture": (
        r"fractur\w*",
        r"callos? de fractura",
        # An acute bone lesion of the chest wall is a fracture ("Sin lesiones óseas agudas.").
        r"(?:lesion(?:es)?|alteracion(?:es)?|hallazgos?|patologia) ose[oa]s? agud[oa]s?",
    ),
    "support_devices": (
        r"marcapasos",
        r"sondas? (?:nasogastrica|endotraqueal|de alimentacion)\w*",
        r"sondas?",
        r"tubos? (?:endotraqueal|de drenaje|de torax|de traqueostomia)\w*",
        r"tubos?",
        r"cateter(?:es)?",
        r"vias? centra\w+",
        r"vias? venosas? (?:centra\w+|yugular\w*|subclavi\w*|femoral\w*)",
        r"drenajes? (?:toracico|pleural)\w*",
        r"cerclajes?",
        r"esternotomia",
        r"suturas? metalicas?",
        r"(?:endo)?protesis(?: valvular(?:es)?| vascular(?:es)?)?",
        r"valvulas? protesicas?",
        r"clips?(?: quirurgicos?| vasculares)?",
        r"dispositivos?",
        r"reservorios?",
        r"stents?",
        r"material(?:es)? de osteosintesis",
        r"canulas? de traqueostomia",
        r"desfibriladore?s?",
        r"electrodos?",
        r"drenajes?",
        r"vertebroplastias?",
        r"filtros? de vena cava",
        r"valvulas? de derivacion",
        # Dictated abbreviations: tubo endotraqueal, sonda nasogástrica, catéter venoso central,
        # desfibrilador automático implantable, catéter central de inserción periférica.
        r"tet|sng|cvc|dai|picc",
    ),
    "infiltration": (r"infiltrad\w*",),
    "mass": (r"masas?",),
    "nodule": (
        r"nodul\w*",
        r"imagen(?:es)? nodular(?:es)?",
        r"imagen(?:es)? (?:de aspecto )?pseudonodular(?:es)?",
    ),
    "emphysema": (r"enfisema\w*", r"bullas?", r"bulloso\w*"),
    "fibrosis": (r"fibrosis", r"cambios fibroticos"),
    "pleural_thickening": (
        r"engrosamientos? pleural\w*",
        r"engrosamiento de la pleura",
        r"paquipleuritis",
    ),
    "hernia": (r"hernias? (?:de hiato|hiatal)", r"hernias?"),
    "hyperinflation": (
        r"hiperinsufla\w*",
        r"atrapamiento aereo",
        r"hiperinflad\w*",
        r"aplanamiento (?:de )?(?:los |ambos )?(?:hemi)?diafragma\w*",
        r"(?:hemi)?diafragmas? aplanados?",
    ),
    "hypoinflation": (
        r"hipoinsufla\w*",
        r"(?:bajos|escasos) volumenes pulmonares",
        r"volumenes pulmonares (?:\w+ )?(?:bajos|disminuidos|reducidos)",
        r"(?:escasa|baja|pobre|insuficiente|deficiente) inspiracion",
        r"hipoventilaci\w+",
        r"pobre (?:esfuerzo )?inspiratorio",
        r"inspiracion (?:\w+ )?(?:insuficiente|deficiente|escasa|pobre|suboptima|limitada)",
    ),
    "granuloma": (r"granulom\w*",),
    "calcification": (r"calcificaci\w+", r"calcificad\w*"),
    "scoliosis": (
        r"escolio\w*",
        r"cifoescolio\w*",
        r"curvatura (?:\w+ )?de (?:la )?columna",
    ),
    "kyphosis": (r"cifosis", r"cifotic\w*", r"hipercifosis", r"cifoescolio\w*"),
    "spondylosis": (
        r"espondilo\w*",
        r"cambios degenerativos",
        r"osteofit\w*",
        r"degenerativ\w+ (?:de la |del? )?(?:columna|raquis|dorsal|vertebra\w*)",
    ),
    "aortic_elongation": (
        r"elongaci\w+ (?:de la )?aort\w*",
        r"elongaci\w+ y ateromatosis aort\w*",
        r"elongaci\w+ (?:y \w+ )?(?:del? )?(?:la )?(?:\w+ )?aort\w*",
        r"aorta (?:\w+ )?(?:elongada|tortuosa|ectasica|desenrollada)",
        r"ectasia aortica",
        r"boton aortico (?:prominente|aumentado)",
    ),
    "aortic_atheromatosis": (
        r"ateromatos\w*",
        r"ateroma\w*",
        r"ateroscleros\w*",
        r"ateroesclero\w*",
        r"calcificaci\w+ (?:del? |en )?(?:el |la )?(?:aort\w+|boton aortico|cayado aortico)",
        r"aorta calcificada",
    ),
    "elevated_hemidiaphragm": (
        r"elevaci\w+ (?:del? )?(?:\w+ )?(?:hemi)?diafragm\w*",
        r"(?:hemi)?diafragma (?:\w+ )?(?:elevado|ascendido)",
        r"ascenso (?:del? )?(?:\w+ )?(?:hemi)?diafragm\w*",
        r"eventraci\w+",
    ),
    "scarring": (
        r"cicatri\w+",
        r"fibrocicatri\w+",
        r"tractos? fibro\w*",
        r"tractos? fibros\w*",
        r"bandas? fibrosas?",
        r"tractos? cicatricial\w*",
    ),
    "bronchiectasis": (r"bronquiecta\w*",),
    "interstitial_pattern": (
        r"patron(?:es)? intersticial(?:es)?",
        r"patron (?:reticular|reticulonodular|micronodular|miliar)",
        r"aumento de (?:la )?trama (?:intersticial|broncovascular)",
        r"trama (?:intersticial|broncovascular) (?:\w+ )?aumentada",
        r"engrosamiento intersticial",
        r"infiltrados? intersticial(?:es)?",
    ),
    "tuberculosis": (r"tubercul\w*", r"tbc", r"tb"),
}

# Signs that point at a finding without naming it: they decide only when the sentence never
# names the finding, so "Pinzamiento de ambos SCF, probablemente por mínimo derrame." hedges the
# effusion (as the English rules read "blunting").
INDIRECT: dict[str, tuple[str, ...]] = {
    # Septal lines are a sign: "Líneas B de Kerley, sugestivas de edema" hedges the edema.
    "edema": (r"lineas (?:b )?de kerley",),
    "pleural_effusion": (
        rf"(?:pinzamiento|borramiento) (?:del? )?(?:los |ambos )?{_SCF_NOUN}",
        rf"{_SCF} (?:\w+ )?(?:pinzados?|borrados?)",
    ),
}

NORMAL: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (
        rf"(?:silueta cardiaca|tamano cardiaco|{_ICT}|corazon) {_W}{{0,2}}"
        r"(?:normal|dentro de (?:los )?limites normales|conservad[oa]|sin alteraciones)",
        rf"(?:silueta cardiaca|tamano cardiaco|{_ICT}) de (?:tamano )?normal",
        rf"{_ICT} (?:<|menor (?:de|que)|inferior a) 0[,.]5\d*",
        rf"(?:silueta cardiaca|tamano cardiaco|{_ICT}|corazon) {_W}{{0,2}}{_NORMAL_RANGE}",
    ),
    "enlarged_cardiomediastinum": (
        r"mediastino (?:de (?:tamano|morfologia|anchura|calibre) normal|sin alteraciones|normal|"
        r"centrado(?:,? de anchura normal)?)",
        r"silueta cardiomediastinica (?:de tamano )?(?:normal|dentro de (?:los )?limites normales|"
        r"sin alteraciones)",
        rf"(?:silueta cardiomediastinica|mediastino) {_W}{{0,2}}{_NORMAL_RANGE}",
    ),
    "pleural_effusion": (
        rf"{_SCF} (?:\w+ )?(?:estan |permanecen )?libres",
    ),
    "hypoinflation": (
        r"(?:adecuada|buena|correcta|normal) (?:insuflacion|inspiracion|expansion)"
        r"(?: pulmonar)?",
        r"volumenes pulmonares (?:normales|conservados)",
        r"normo-?(?:insuflad|expandid|aireado)\w*",
    ),
    "hyperinflation": (
        r"(?:adecuada|buena|correcta|normal) (?:insuflacion|expansion)(?: pulmonar)?",
        r"volumenes pulmonares (?:normales|conservados)",
        r"normo-?(?:insuflad|expandid|aireado)\w*",
    ),
}

EXCLUDE: dict[str, tuple[str, ...]] = {
    "pleural_effusion": (r"derrames? pericardic\w*", r"derrames? articular\w*"),
    "emphysema": (r"enfisema subcutaneo",),
    "fibrosis": (r"fibrosis quistica",),
    "lung_lesion": (r"lesion(?:es)? (?:osea|oseas|litica|liticas|blastica|blasticas|cutanea\w*)",),
    "calcification": (
        r"(?:granulomas?|nodulos?)(?: pulmonares?)? calcificad\w*",
        r"calcificaci\w+ (?:del? |en )?(?:el |la )?(?:aort\w+|boton aortico|cayado aortico)",
        r"aorta calcificada",
        r"(?:placas? (?:de )?)?ateroma\w* calcificad\w*",
        r"calcificaci\w+ pleural\w*",
    ),
    "lung_opacity": (r"densidad osea", r"densidad(?:es)? calcica\w*"),
    # A fracture "en fase de consolidación" is healing bone, not lung.
    "consolidation": (
        r"(?:en )?(?:fase|proceso|vias?) de consolidaci\w+",
        r"consolidaci\w+ (?:osea|de (?:la |las |los )?(?:fractur\w+|callos?))",
    ),
    "support_devices": (r"sin dispositivos", r"tubos? digestivo"),
    # Degenerative changes of the shoulders and other joints are not of the spine.
    "spondylosis": (
        r"(?:cambios )?degenerativ\w+ (?:en |de |del )(?:los |las |ambos |ambas |el |la )?"
        r"(?:(?!columna |dorsal |raquis |vertebra)[\w-]+ ){0,2}(?:hombros?|articulaci\w+|"
        r"acromioclavicular\w*|glenohumeral\w*|esternoclavicular\w*|rodillas?|caderas?|humer\w*|"
        r"clavicul\w*)",
    ),
    # A nodular image the report explains as something else (nipple, granuloma, callus) is that.
    "nodule": (
        r"(?:imagen|opacidad|densidad)(?:es)? (?:pseudo)?nodular\w* (?:[\w-]+,? ){0,8}"
        rf"{_EXPLAINED}(?:[\w-]+ ){{0,2}}(?:pezon\w*|mamil\w*|granulom\w*|fractur\w*|callos?)",
        # A "nodule" read as a nipple is no nodule (one read as a granuloma still is).
        rf"(?:imagen(?:es)? de )?nodul\w* (?:[\w-]+,? ){{0,8}}{_EXPLAINED}(?:[\w-]+ ){{0,2}}"
        r"(?:pezon\w*|mamil\w*)",
    ),
}

NEGATION_PRE: tuple[str, ...] = (
    r"no",
    r"sin",
    r"ni",
    r"ausencia de",
    r"libres? de",
    r"negativ\w+ para",
    r"se descarta",
    r"descartad\w+",
    r"desaparici\w+(?: del?)?",
    r"(?:ha|han) desaparecido(?: el| la| los| las)?",
    r"resoluci\w+(?: del?)?",
    r"retirada(?: del?)?",
    # "Se retira el tubo", "se ha retirado la sonda": the device is no longer there.
    r"se (?:ha |han )?retira(?:n|do|da|dos|das)?(?: el| la| los| las)?",
    # A denied impression is a negation, not a hedge: "No impresiona de derrame."
    r"no (?:impresiona|parecen?)(?: de| como| existir| haber| observarse)?",
    r"no (?:se )?(?:observa|observan|aprecia|aprecian|identifica|identifican|visualiza|"
    r"visualizan|evidencia|evidencian|objetiva|objetivan|ve|ven|hay|existe|existen|muestra)",
    r"sin (?:evidencia|signos|imagenes|datos|hallazgos) de",
)

NEGATION_POST: tuple[str, ...] = (
    r"no (?:se )?(?:observa|observan|aprecia|aprecian|identifica|identifican|visualiza|"
    r"visualizan|evidencia|evidencian|objetiva|objetivan)",
    r"no (?:es |son )?(?:visibles?|presentes?|identificables?)",
    r"(?:ha|han) desaparecido",
    r"resuelt[oa]s?",
    r"ausentes?",
    r"(?:ha sido |han sido )?retirad[oa]s?",
)

UNCERTAIN_PRE: tuple[str, ...] = (
    r"no se (?:puede |pueden )?descarta\w*",
    r"no (?:es posible|se puede|podemos) descartar",
    r"sin (?:poder )?descartar",
    r"no (?:se )?(?:puede|pueden) excluir",
    r"a descartar",
    r"descartar",
    r"probable\w*",
    r"posible\w*",
    r"sugestiv\w+ de",
    r"sugiere\w*",
    r"sugerente\w* de",
    r"sospecha\w*(?: de)?",
    r"sospechos\w+ de",
    r"dudos\w+",
    r"podria\w*",
    r"pudiera\w*",
    r"puede (?:corresponder a|tratarse de|representar|deberse a)",
    r"impresiona(?: de| como)?",
    r"(?:hallazgos? |imagen(?:es)? |signos )?(?:sugerente|sugestiv[oa])s? de",
    r"parece\w*",
    r"valorar",
    r"a valorar",
    r"versus",
    r"vs\.?",
    # "frente a" as "versus", not as the comparison "frente a la radiografía previa".
    r"frente a(?! (?:la|las|el|los|estudio|control|radiografia|rx|placa|previ\w*)\b)",
    r"indeterminad\w+",
    r"en probable relacion con",
    # "Compatible con" is how a Spanish radiologist hedges a diagnosis the image cannot prove.
    r"(?:hallazgos? |imagen(?:es)? |signos )?compatibles? con",
    r"no (?:claramente|claro)",
)

#: Uncertainty triggers through which an earlier negation reaches: "Sin imágenes sugestivas de
#: neumonía", "No se observan hallazgos compatibles con neumotórax".
EVIDENTIAL: tuple[str, ...] = (
    r"(?:hallazgos? |imagen(?:es)? |signos )?(?:sugerente|sugestiv[oa])s? de",
    r"sugestiv\w+ de",
    r"sugerente\w* de",
    r"sospechos\w+ de",
    r"(?:hallazgos? |imagen(?:es)? |signos )?compatibles? con",
)

#: A backward-looking hedge ends its clause: in "aumento de densidad, a descartar neumonía" or
#: "opacidad basal, probable neumonía" it hedges the finding after it, not the one before.
_CLAUSE_END = r"(?=\s*(?:[,;.:)]|$))"

UNCERTAIN_POST: tuple[str, ...] = (
    r"no (?:se )?(?:puede |pueden )?descarta\w*" + _CLAUSE_END,
    r"a descartar" + _CLAUSE_END,
    r"\?",
    r"(?:es |son )?probable\w*" + _CLAUSE_END,
    r"a valorar" + _CLAUSE_END,
    r"dudos\w+",
    r"versus",
    r"vs\.?",
    r"frente a(?! (?:la|las|el|los|estudio|control|radiografia|rx|placa|previ\w*)\b)",
    # "Cardiomegalia límite": a borderline degree (not "en el límite alto de la normalidad").
    r"limite(?! (?:alto|superior|bajo|inferior|de)\b)",
)

#: Uncertainty triggers that hedge only the reading of something seen, as in English
#: (:data:`engine.labeler.rules_en.PROBABLE`): "probable neumonía", "en probable relación con",
#: "compatible con" (a committed reading the image alone cannot prove), "impresiona de",
#: "atelectasia versus infiltrado".
PROBABLE: tuple[str, ...] = (
    r"probable\w*",
    r"(?:es |son )?probable\w*",
    r"en probable relacion con",
    r"(?:hallazgos? |imagen(?:es)? |signos )?compatibles? con",
    r"impresiona(?: de| como)?",
    r"versus",
    r"vs\.?",
    r"frente a(?! (?:la|las|el|los|estudio|control|radiografia|rx|placa|previ\w*)\b)",
    r"limite(?! (?:alto|superior|bajo|inferior|de)\b)",
)

PSEUDO: tuple[str, ...] = (
    # "Sin cambios" is about the previous study, unless the changes are a finding
    # ("sin cambios degenerativos").
    r"sin cambios(?: significativos)?(?! (?:degenerativ|postquirurg|cicatri|fibro|oseos))",
    r"no (?:ha |han )?cambiad\w*",
    r"sin variaci\w+",
    r"sin modificaci\w+",
    r"no (?:hay |se observan )?cambios(?: significativos)?"
    r"(?! (?:degenerativ|postquirurg|cicatri|fibro|oseos))",
    r"sin otros hallazgos",
    r"no (?:presenta )?variaci\w+",
)

TERMINATORS: tuple[str, ...] = (
    r"pero",
    r"aunque",
    r"sin embargo",
    r"salvo",
    r"excepto",
    r"si bien",
    r"mientras que",
    # "Resolución del neumotórax tras la colocación de un drenaje": the drain is there.
    r"tras",
    r"despues de",
    r",\s*(?:con|y|se observa|se observan|se aprecia|se aprecian|existe|existen|hay)",
    r";",
    r":",
)

# Global normal statements: a whole sentence that calls the study normal ("Sin hallazgos
# patológicos significativos.", "Estudio dentro de la normalidad.", "Tórax sin alteraciones.").
# Each pattern must match the whole sentence (folded, an opening "Impresión:"-style heading and
# the final stop removed), so a qualified or regional statement is not global: "Sin otros
# hallazgos.", "Resto del estudio sin alteraciones.", "Parénquima pulmonar sin alteraciones.",
# "Sin hallazgos patológicos salvo ...", "Sin hallazgos de neumonía." The labeler derives
# ``no_finding`` from the findings it reads; the neural-writer check reads these to catch a
# text that calls the study normal beside a finding (engine.writers.check).
_HALLAZGOS = (
    r"(?:hallazgos?|alteracion(?:es)?|anomalias?|anormalidad(?:es)?|patologia|enfermedad)"
)
_QUALITY = (
    r"(?:,? (?:y |ni )?(?:patologic[oa]s?|radiologic[oa]s?|significativ[oa]s?|relevantes?|"
    r"de interes|valorables?|destacables?|resenables?|concluyentes?|agud[oa]s?|evidentes?|"
    r"(?:cardio|pleuro|cardiopleuro)?pulmonar(?:es)?|cardiac[oa]s?|(?:cardio)?mediastinic[oa]s?|"
    r"a (?:destacar|resenar|senalar)|para (?:la|su) edad|"
    r"toracic[oa]s?|intratoracic[oa]s?|(?:de )?caracter agudo|"
    r"(?:de )?(?:significacion|significado) patologic[oa]|"
    r"(?:radiologicamente|clinicamente) significativ[oa]s?))*"
)
_STUDY = (
    r"(?:estudio|radiografia|rx|placa|exploracion|examen|torax|control)"
    r"(?: (?:radiologic[oa]|radiografic[oa]|simple|actual|de torax|del torax|toracic[oa]|"
    r"(?:en )?(?:proyecciones? )?(?:pa|ap|posteroanterior|anteroposterior)(?: y lateral)?))*"
)
_NORMALITY = (
    r"(?:normal(?:es)?|dentro de (?:la )?normalidad|dentro de (?:los )?limites normales|"
    r"sin (?:alteraciones|hallazgos)" + _QUALITY + r"|de caracteristicas normales|"
    r"sin evidencia de patologia" + _QUALITY + r")(?: para (?:la|su) edad)?"
)
GLOBAL_NORMAL: tuple[str, ...] = (
    r"(?:sin|no (?:se )?(?:(?:observa|aprecia|identifica|evidencia|visualiza|objetiva|"
    r"demuestra)n?|hay|existen?|presenta)|ausencia de) " + _HALLAZGOS + _QUALITY,
    r"sin (?:evidencia|signos|datos|imagenes) de " + _HALLAZGOS + _QUALITY,
    _STUDY + r" (?:(?:es|se encuentra|resulta|esta) )?" + _NORMALITY,
    r"(?:hallazgos|resultado) (?:radiologicos? )?dentro de (?:la )?normalidad",
    r"(?:normal|normalidad radiologica|dentro de (?:la )?normalidad)",
)
#: A global normal statement limited to acute disease ("Sin hallazgos cardiopulmonares
#: agudos."): it does not deny chronic findings.
GLOBAL_NORMAL_ACUTE: str = r"\bagud[oa]s?\b"
#: Headings that may open the sentence of a global normal statement.
GLOBAL_NORMAL_HEADING: str = r"(?:impresion|conclusion|diagnostico|juicio|comentario)\s*:\s*"

RULES_ES = LanguageRules(
    lang="es",
    mentions=MENTIONS,
    normal=NORMAL,
    indirect=INDIRECT,
    exclude=EXCLUDE,
    negation_pre=NEGATION_PRE,
    negation_post=NEGATION_POST,
    uncertain_pre=UNCERTAIN_PRE,
    uncertain_post=UNCERTAIN_POST,
    pseudo=PSEUDO,
    terminators=TERMINATORS,
    evidential=EVIDENTIAL,
    probable=PROBABLE,
)
