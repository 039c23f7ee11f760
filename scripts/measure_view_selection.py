"""Measure frontal selection on the IU X-Ray header table, with and without View Position.

The table (``iu_xray/nlmcxr_dicom_metadata.csv.gz``) holds the DICOM headers of 7,470 images
but no pixels, so the image-based decision cannot run here: an image whose header is silent or
contradicts itself counts as "needs pixels". Reference: View Position (PA/AP frontal;
LL/RL/LATERAL lateral); studies (``CXR<n>``) with exactly one frontal and at least one lateral
by that reference are the two-view studies measured. ``Code Meaning`` (a procedure description
such as "Xray Chest PA and Lateral", shared by the study's images) is read as series text.

For comparison, the previous rule: no View Position -> the widest image is the frontal.

On the real files: the shared DICOMs through :func:`engine.views.select_views` one study each;
then two-image studies with a silent header made of a Hannover frontal (another hospital, not
used to fit the image model) and a lateral of ``lateral_chest/`` (used to fit it, so that side
is optimistic), every pair in both orders: how often the frontal is chosen.

    PYTHONPATH=$PWD python scripts/measure_view_selection.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pydicom

from engine.exceptions import NoUsableImageError, StudyError
from engine.preprocessing import image_file_to_display
from engine.view_model import THRESHOLD, frontal_probability
from engine.views import ViewCandidate, choose_views, classify_header, select_views

REFERENCE = {"PA": "frontal", "AP": "frontal", "LL": "lateral", "RL": "lateral",
             "LATERAL": "lateral", "LARGE LATERAL": "lateral"}


def header_of(row: dict[str, str], with_view_position: bool) -> dict[str, Any]:
    """A table row as the header mapping :func:`engine.views.classify_header` reads."""
    codes = []
    sequence = row.get("View Code Sequence", "")
    for value, meaning in re.findall(
        r"Code Value\s+SH: '([^']*)'.*?Code Meaning\s+LO: '([^']*)'", sequence, re.S
    ):
        codes.append({"CodeValue": value, "CodeMeaning": meaning})
    orientation = row.get("Patient Orientation", "")
    try:
        parsed = ast.literal_eval(orientation) if orientation else []
    except (ValueError, SyntaxError):
        parsed = []
    return {
        "ViewPosition": row["View Position"] if with_view_position else "",
        "ViewCodeSequence": codes,
        "BodyPartExamined": row.get("Body Part Examined", ""),
        "ImageLaterality": row.get("Image Laterality", ""),
        "PatientOrientation": parsed,
        "SeriesDescription": row.get("Code Meaning", ""),
    }


def _int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


def measure(rows: list[dict[str, str]], with_view_position: bool) -> dict[str, int]:
    studies: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        studies[row["imageid"].split("_")[0]].append(row)
    counts = {"two_view_studies": 0, "right": 0, "wrong": 0, "needs_pixels": 0,
              "widest_right": 0, "widest_wrong": 0, "widest_tie": 0}
    for study, group in studies.items():
        truth = [REFERENCE.get(r["View Position"].strip().upper()) for r in group]
        if truth.count("frontal") != 1 or "lateral" not in truth:
            continue
        counts["two_view_studies"] += 1
        candidates = [
            ViewCandidate(r, classify_header(header_of(r, with_view_position)),
                          (_int(r["Instance Number"]), r["imageid"]), lambda: None, r["imageid"])
            for r in group
        ]
        try:
            chosen = choose_views(candidates, study).frontal
            ok = REFERENCE.get(chosen["View Position"].strip().upper()) == "frontal"
            counts["right" if ok else "wrong"] += 1
        except NoUsableImageError:
            counts["needs_pixels"] += 1
        aspects = [_int(r["Columns"]) / max(_int(r["Rows"]), 1) for r in group]
        widest = max(range(len(group)), key=lambda i: aspects[i])
        if aspects.count(aspects[widest]) > 1:
            counts["widest_tie"] += 1
        counts["widest_right" if truth[widest] == "frontal" else "widest_wrong"] += 1
    return counts


def per_image(rows: list[dict[str, str]], with_view_position: bool) -> dict[str, int]:
    """Header-only view of each image that has a reference view: right, wrong, silent,
    contradictory."""
    counts = {"images": 0, "right": 0, "wrong": 0, "silent": 0, "contradictory": 0}
    for row in rows:
        truth = REFERENCE.get(row["View Position"].strip().upper())
        if truth is None:
            continue
        counts["images"] += 1
        guess = classify_header(header_of(row, with_view_position))
        if guess.contradictory:
            counts["contradictory"] += 1
        elif guess.view is None:
            counts["silent"] += 1
        else:
            counts["right" if guess.view == truth else "wrong"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args(argv)
    with gzip.open(args.data / "iu_xray" / "nlmcxr_dicom_metadata.csv.gz", "rt") as fh:
        rows = list(csv.DictReader(fh))
    print(f"IU X-Ray header table: {len(rows)} images")
    for with_vp in (True, False):
        c = measure(rows, with_vp)
        n = c["two_view_studies"]
        label = "with View Position" if with_vp else "View Position removed"
        print(
            f"{label}: {n} two-view studies; frontal chosen right {c['right']} "
            f"({c['right'] / n:.1%}), wrong {c['wrong']} ({c['wrong'] / n:.1%}), no frontal "
            f"from the header {c['needs_pixels']} ({c['needs_pixels'] / n:.1%}; header silent: "
            "the pixels decide at the node, or Body Part Examined is not a chest)"
        )
        i = per_image(rows, with_vp)
        print(
            f"  per image ({i['images']} with a reference view): header right {i['right']}, "
            f"wrong {i['wrong']}, silent {i['silent']}, contradictory {i['contradictory']}"
        )
        if not with_vp:
            print(
                f"  previous rule (widest image): wrong {c['widest_wrong']} "
                f"({c['widest_wrong'] / n:.1%}), width ties {c['widest_tie']}"
            )
    real_files(args.data)
    return 0


def real_files(data: Path) -> None:
    print("shared DICOMs, one study each:")
    for path in sorted((data / "dicom").glob("*.dcm")):
        try:
            reason = select_views([pydicom.dcmread(path)]).frontal_reason
            print(f"  {path.name}: frontal ({reason})")
        except StudyError as exc:
            print(f"  {path.name}: not reported ({str(exc).split('(', 1)[1][:150]}...)")
    frontal = [
        frontal_probability(image_file_to_display(p))
        for p in sorted((data / "hannover_covid" / "png").glob("*.png"))
    ]
    lateral = []
    for p in sorted((data / "lateral_chest" / "images").iterdir()):
        try:
            lateral.append(frontal_probability(image_file_to_display(p)))
        except StudyError:
            continue
    right = none = 0
    for f in frontal:
        for lat in lateral:
            if max(f, lat) < THRESHOLD:
                none += 1
            elif f > lat:
                right += 1
    pairs = len(frontal) * len(lateral)
    print(
        f"silent-header studies (Hannover frontal + lateral, {pairs} pairs, either order): "
        f"frontal chosen {right / pairs:.1%}, lateral chosen {(pairs - right - none) / pairs:.1%}, "
        f"not reported (no image reaches P(frontal) {THRESHOLD}) {none / pairs:.1%}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
