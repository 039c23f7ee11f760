"""English reference, bridged Spanish target and generated Spanish report, side by side.

For a Spanish-speaking radiologist to judge the generated drafts. Writes Markdown or HTML for
a random sample of studies of an R2Gen-style IU X-Ray split:

    PYTHONPATH=. python scripts/side_by_side.py --split test --n 20 \\
        --predictions out/predictions.jsonl --out /tmp/side_by_side.html

``--predictions`` is what ``python -m engine.predict`` or ``training evaluate --engine`` wrote
(one JSON object per study with ``study_id`` and ``report``); without it the generated column
is left empty. The output holds IU X-Ray text and its translation: keep it for internal
review, outside the repository (the licence, CC BY-NC-ND 4.0, forbids publishing modified
copies of the reports).
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import random
import sys
from pathlib import Path

from training.bridge import bridge_report
from training.evaluate import read_predictions

logger = logging.getLogger(__name__)

DEFAULT_ANNOTATION = Path("../shared/data/iu_xray/r2gen_split_annotation.json")


def rows(records: list[dict[str, str]], generated: dict[str, str]) -> list[dict[str, str]]:
    """One row per study: id, English, Spanish target, dropped sentences, generated."""
    out = []
    for record in records:
        bridged = bridge_report(record["report"])
        out.append({
            "study": str(record["id"]),
            "english": record["report"],
            "target": bridged.text() or "(nada traducible)",
            "dropped": " | ".join(s.source for s in bridged.dropped),
            "generated": generated.get(str(record["id"]), ""),
        })
    return out


def markdown(table: list[dict[str, str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ") or "—"

    lines = [
        "| Estudio | Informe de referencia (inglés) | Referencia en español (puente) | "
        "Frases no traducidas | Informe generado |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in table:
        lines.append(f"| {cell(r['study'])} | {cell(r['english'])} | {cell(r['target'])} | "
                     f"{cell(r['dropped'])} | {cell(r['generated'])} |")
    return "\n".join(lines) + "\n"


def html_page(table: list[dict[str, str]]) -> str:
    head = ("<tr><th>Estudio</th><th>Informe de referencia (inglés)</th>"
            "<th>Referencia en español (puente)</th><th>Frases no traducidas</th>"
            "<th>Informe generado</th></tr>")
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(r[k]) or '—'}</td>"
                         for k in ("study", "english", "target", "dropped", "generated"))
        + "</tr>" for r in table
    )
    return (
        "<!doctype html><html lang=\"es\"><meta charset=\"utf-8\">"
        "<title>Informes lado a lado</title><style>td{vertical-align:top;padding:4px;"
        "border:1px solid #ccc}table{border-collapse:collapse}</style>"
        "<p>Borradores generados automáticamente: uso interno, no clínico.</p>"
        f"<table>{head}{body}</table></html>\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation", type=Path, default=DEFAULT_ANNOTATION)
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--n", type=int, default=20, help="studies in the sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--predictions", type=Path, help="generated reports (JSONL)")
    parser.add_argument("--out", type=Path, required=True, help=".md or .html")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    records = json.loads(args.annotation.read_text(encoding="utf-8"))[args.split]
    generated = read_predictions(args.predictions) if args.predictions else {}
    if generated:
        records = [r for r in records if str(r["id"]) in generated] or records
    sample = random.Random(args.seed).sample(records, min(args.n, len(records)))
    table = rows(sample, generated)
    text = html_page(table) if args.out.suffix.lower() in (".html", ".htm") else markdown(table)
    args.out.write_text(text, encoding="utf-8")
    print(f"{len(table)} studies written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
