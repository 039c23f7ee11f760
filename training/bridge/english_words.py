"""English words of chest radiograph reports that must never appear in Spanish output.

Words spelled the same in both languages ("no", "normal", "edema", "granuloma", "hernia",
"tuberculosis", "fibrosis", "stent", "pleural", "focal", "base", "bilateral", "lateral",
"apical", "central", "probable", "aorta", "clips") are left out: they prove nothing.
"""

from __future__ import annotations

import re

_WORDS = """
the and or of with without is are was were there this that be been has have heart lungs lung
clear effusion effusions pneumothorax consolidation consolidations opacity opacities
atelectasis cardiomegaly silhouette size within limits unremarkable acute disease airspace
right left bilaterally upper lower middle lobe lobes basilar apex hilar perihilar mild
moderate severe small large minimal trace stable unchanged new prior previous comparison
findings impression evidence seen noted identified spine thoracic degenerative changes change
bony osseous structures intact fracture fractures rib ribs clavicle mediastinal mediastinum
contours contour vascularity pulmonary cardiac enlarged enlargement nodule nodules mass masses
calcified calcification calcifications scarring scar chronic emphysema hyperinflated
hyperinflation volumes volume low tortuous aortic atherosclerotic atherosclerosis interstitial
markings tube tubes catheter line lines pacemaker sternotomy wires hardware possible likely
cannot exclude suggest suggestive consistent compatible otherwise grossly negative limits
appear appears appearance trachea midline soft tissues diaphragm hemidiaphragm elevated
elevation blunting costophrenic angle angles infiltrate infiltrates pneumonia lesion deformity
scoliosis kyphosis xxxx chest radiograph examination study view views frontal since from in on
at
"""
ENGLISH_REPORT_WORDS: frozenset[str] = frozenset(_WORDS.split())

_WORD = re.compile(r"[^\W\d_]+")


def english_words_in(text: str) -> list[str]:
    """The words of ``text`` that are English report words (lower case, in order)."""
    return [w for w in (m.group().lower() for m in _WORD.finditer(text))
            if w in ENGLISH_REPORT_WORDS]
