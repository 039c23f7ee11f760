"""Generated Spanish reports side by side with what they can be judged against.

For a Spanish-speaking radiologist to judge the drafts. Two samples, Markdown or HTML (by the
``--out`` suffix):

``nih`` (publishable; the committed docs/samples/ is made with it): NIH ChestX-ray14 images of
the patient-disjoint test split, each with its NIH labels (English label names), the engine's
coded findings and the Spanish report the engine writes for it, plus, with
``--iu-predictions``, IU X-Ray "findings given" generations shown with only their prompt
findings. No reference report text of any dataset appears in it. NIH ChestX-ray14 was released
by the NIH Clinical Center without restriction (cite Wang et al. 2017)::

    PYTHONPATH=. python scripts/side_by_side.py nih --engine engines/cxr-unpaired-es \\
        --n 20 --out docs/samples/nih-test-sample.md

``iu`` (local review only, never committed): the IU X-Ray English reference, its bridged
Spanish target and the generated Spanish report. It holds IU X-Ray text and its translation,
which the licence (CC BY-NC-ND 4.0) forbids publishing, so it refuses to write inside this
repository::

    PYTHONPATH=. python scripts/side_by_side.py iu --split test --n 20 \\
        --predictions out/predictions.jsonl --out /tmp/side_by_side.html

``--predictions`` is what ``python -m engine.predict`` or ``training evaluate --engine`` wrote
(one JSON object per study with ``study_id`` and ``report``); without it the generated column
is left empty.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ANNOTATION = REPO.parent / "shared" / "data" / "iu_xray" / "r2gen_split_annotation.json"
DEFAULT_NIH = REPO.parent / "shared" / "data" / "nih"

logger = logging.getLogger(__name__)

DISCLAIMER = (
    "Borradores generados automáticamente por un motor de demostración, no aptos para uso "
    "diagnóstico: requieren revisión y validación por un radiólogo."
)
PRESENCE_ES = {"present": "presente", "uncertain": "dudoso", "absent": "ausente"}


@dataclass(frozen=True)
class Table:
    """A sample: a title, notes above the table, column headings and one row per study."""

    title: str
    notes: tuple[str, ...]
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def markdown(tables: Sequence[Table], header: Sequence[str] = ()) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", "<br>") or "—"

    lines = [*header]
    for t in tables:
        lines += ["", f"## {t.title}", "", *t.notes, ""]
        lines.append("| " + " | ".join(t.columns) + " |")
        lines.append("|" + " --- |" * len(t.columns))
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines).lstrip("\n") + "\n"


def html_page(tables: Sequence[Table], header: Sequence[str] = ()) -> str:
    def para(text: str) -> str:
        return f"<p>{html.escape(text.lstrip('# '))}</p>" if text.strip() else ""

    parts = [para(h) for h in header]
    for t in tables:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
        body = "".join(
            "<tr>" + "".join(
                f"<td>{html.escape(c).replace(chr(10), '<br>') or '—'}</td>" for c in row
            ) + "</tr>"
            for row in t.rows
        )
        parts.append(f"<h2>{html.escape(t.title)}</h2>" + "".join(para(n) for n in t.notes)
                     + f"<table><tr>{head}</tr>{body}</table>")
    return (
        "<!doctype html><html lang=\"es\"><meta charset=\"utf-8\">"
        "<title>Informes lado a lado</title><style>td{vertical-align:top;padding:4px;"
        "border:1px solid #ccc}table{border-collapse:collapse}</style>"
        + "".join(parts) + "</html>\n"
    )


def write(out: Path, tables: Sequence[Table], header: Sequence[str] = ()) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    html_out = out.suffix.lower() in (".html", ".htm")
    text = html_page(tables, header) if html_out else markdown(tables, header)
    out.write_text(text, encoding="utf-8")


# -- NIH sample (publishable) ---------------------------------------------------------------


def nih_labels_en(findings: dict[str, str]) -> list[str]:
    """The NIH label names (English, as the dataset writes them) of a record's findings."""
    from training.label_maps import NIH_LABELS, nih_to_key

    if findings.get("no_finding") == "present":
        return ["No Finding"]
    return [lab for lab in NIH_LABELS if findings.get(nih_to_key(lab) or "") == "present"]


def pick_nih(records: list, n: int, seed: int) -> list:  # type: ignore[type-arg]
    """``n`` records, half labelled "No Finding" and half with findings where the split has
    them, in a random order fixed by ``seed``, one image per patient."""
    rng = random.Random(seed)
    seen: set[str] = set()
    unique = []
    for r in sorted(records, key=lambda r: r.study_id):
        if r.patient_id not in seen:
            seen.add(r.patient_id)
            unique.append(r)
    normal = [r for r in unique if r.findings.get("no_finding") == "present"]
    abnormal = [r for r in unique if r.findings.get("no_finding") != "present"]
    k_abnormal = min(len(abnormal), n - min(len(normal), n // 2))
    chosen = rng.sample(abnormal, k_abnormal) + rng.sample(normal, min(len(normal),
                                                                       n - k_abnormal))
    return sorted(chosen, key=lambda r: r.study_id)


def coded_text(findings: Sequence, names: dict[str, str]) -> str:  # type: ignore[type-arg]
    """The coded findings as the SR holds them: presence and probability, present first."""
    rank = {"present": 0, "uncertain": 1, "absent": 2}
    ordered = sorted(findings, key=lambda f: (rank[f.presence], -f.probability))
    return "\n".join(
        f"{names.get(f.key, f.key)}: {PRESENCE_ES[f.presence]} "
        f"({f.probability:.2f})".replace(".", ",")
        for f in ordered
    )


def nih_table(engine_dir: Path, nih: Path, n: int, seed: int, threads: int) -> tuple[Table, str]:
    from engine.runtime import ImageStudy, create_engine
    from training.data.nih import NIHChestXray14Dataset

    engine = create_engine(engine_dir, "onnxruntime", backend_options={"threads": threads})
    manifest = engine.artifact.manifest
    names = {f.key: f.name_es for f in manifest.findings}
    records = pick_nih(list(NIHChestXray14Dataset(nih, split="test")), n, seed)
    studies = [ImageStudy(r.study_id, tuple((i.path, i.view) for i in r.images)) for r in records]
    reports = engine.report_image_studies(studies, return_exceptions=True)
    rows = []
    for record, report in zip(records, reports, strict=True):
        labels = ", ".join(nih_labels_en(record.findings))
        image = record.images[0].path.name
        if isinstance(report, Exception):
            rows.append((image, labels, "—", f"No informado: {report}"))
            continue
        text = "\n".join(f"{title}: {body}" for title, body in report.sections)
        rows.append((image, labels, coded_text(report.findings, names), text))
    identity = engine.identity
    source = (f"`{_shown(engine_dir)}` ({identity.name} {identity.version}, sha256 "
              f"{identity.sha256[:12]}…), redactor `{manifest.report_writer}`")
    table = Table(
        f"NIH ChestX-ray14, partición de test (disjunta por paciente): {len(rows)} imágenes",
        (
            "Etiquetas NIH: las del conjunto de datos, en inglés tal como se publican "
            "(extraídas por minería de texto de los informes originales, que no se publican).",
            "Hallazgos codificados: lo que el motor escribe en el SR (TID 1500), con su "
            "probabilidad; «dudoso» es la banda de incertidumbre calibrada.",
            "Informe generado: el texto del borrador tal como lo recibe el radiólogo.",
        ),
        ("Imagen NIH", "Etiquetas NIH (inglés)", "Hallazgos codificados por el motor",
         "Informe generado (español)"),
        tuple(rows),
    )
    return table, source


def iu_prompt_table(predictions: Path, names: dict[str, str], states: Sequence[str],
                    n: int, seed: int) -> Table:
    """IU X-Ray "findings given" generations (scripts/iu_findings_given.py) with only their
    prompt findings: no IU X-Ray text."""
    lines = [json.loads(x) for x in predictions.read_text(encoding="utf-8").splitlines()
             if x.strip()]
    def given_of(p: dict) -> list[str]:  # type: ignore[type-arg]
        prompt = {k: states[int(v)] for k, v in p.get("prompt", {}).items()}
        return [f"{names.get(k, k)}: {PRESENCE_ES.get(v, v)}" for k, v in prompt.items()
                if v != "absent"]

    # Prompts that give a finding first (half the sample at most), then normal ones: a
    # decoder that ignores its prompt shows it there.
    rng = random.Random(seed)
    abnormal = [p for p in lines if any(not g.startswith(names.get("no_finding", "no_finding"))
                                        for g in given_of(p))]
    normal = [p for p in lines if p not in abnormal]
    k = min(len(abnormal), max(n - len(normal), (n + 1) // 2))
    sample = rng.sample(abnormal, k) + rng.sample(normal, min(len(normal), n - k))
    rows = []
    for p in sample:
        given = given_of(p) or ["(ninguno presente ni dudoso)"]
        text = "\n".join(f"{t}: {b}" for t, b in p.get("sections", {}).items()) or p["report"]
        rows.append(("\n".join(given), text))
    return Table(
        f"IU X-Ray, hallazgos dados (sin imagen): {len(rows)} estudios",
        ("El decodificador neuronal escribe a partir de los hallazgos del prompt solamente (las "
         "imágenes de IU X-Ray no están disponibles). Se omiten el identificador y el texto de "
         "IU X-Ray (licencia CC BY-NC-ND 4.0). Este texto no pasa el control del motor: en "
         "funcionamiento, un texto neuronal que omite o contradice un hallazgo codificado se "
         "sustituye por el informe estructurado.",),
        ("Hallazgos dados (no ausentes)", "Informe generado por el decodificador (español)"),
        tuple(rows),
    )


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (no machine paths in the docs)."""
    resolved = path.resolve()
    return resolved.relative_to(REPO).as_posix() if resolved.is_relative_to(REPO) else str(path)


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def run_nih(args: argparse.Namespace) -> int:
    logging.getLogger("engine").setLevel(logging.ERROR)
    table, source = nih_table(args.engine, args.nih, args.n, args.seed, args.threads)
    tables = [table]
    if args.iu_predictions:
        from engine.artifact import load_artifact

        manifest = load_artifact(args.engine).manifest
        if manifest.prompt is None:
            print("error: --iu-predictions needs an engine with a findings prompt",
                  file=sys.stderr)
            return 2
        names = {f.key: f.name_es for f in manifest.findings}
        states = manifest.prompt.states
        tables.append(iu_prompt_table(args.iu_predictions, names, states, args.iu_n, args.seed))
    engine_arg = _shown(args.engine)
    command = (f"PYTHONPATH=. python scripts/side_by_side.py nih --engine {engine_arg} "
               f"--n {args.n} --seed {args.seed}")
    if args.iu_predictions:
        command = (f"PYTHONPATH=. python scripts/iu_findings_given.py --engine {engine_arg} "
                   f"--out IU_DIR --limit {_count_lines(args.iu_predictions)}\n    {command} "
                   f"--iu-predictions IU_DIR/predictions.jsonl --iu-n {args.iu_n}")
    command += f" --out {_shown(args.out)}"
    header = (
        "# Informes generados: muestra para revisión por radiólogos",
        "",
        f"**{DISCLAIMER}**",
        "",
        f"Motor: {source}. Generado el {datetime.now(UTC):%Y-%m-%d} con:",
        "",
        f"    {command}",
        "",
        "Imágenes: NIH ChestX-ray14 (NIH Clinical Center, publicado sin restricciones; "
        "Wang et al., CVPR 2017). Ningún texto de informe de referencia aparece aquí.",
    )
    write(args.out, tables, header)
    print(f"{len(table.rows)} NIH images written to {args.out}")
    return 0


# -- IU side by side (local only) -----------------------------------------------------------


def iu_rows(records: list[dict[str, str]], generated: dict[str, str]) -> list[tuple[str, ...]]:
    """One row per study: id, English, Spanish target, dropped sentences, generated."""
    from training.bridge import bridge_report

    out = []
    for record in records:
        bridged = bridge_report(record["report"])
        out.append((
            str(record["id"]),
            record["report"],
            bridged.text() or "(nada traducible)",
            " | ".join(s.source for s in bridged.dropped),
            generated.get(str(record["id"]), ""),
        ))
    return out


def inside_repository(path: Path) -> bool:
    return path.resolve().is_relative_to(REPO)


def run_iu(args: argparse.Namespace) -> int:
    from training.evaluate import read_predictions

    if inside_repository(args.out):
        print(f"error: {args.out} is inside the repository; the IU X-Ray side by side holds "
              "IU X-Ray text and its translation, which its licence (CC BY-NC-ND 4.0) forbids "
              "publishing: write it outside the repository (e.g. /tmp/side_by_side.html)",
              file=sys.stderr)
        return 2
    records = json.loads(args.annotation.read_text(encoding="utf-8"))[args.split]
    generated = read_predictions(args.predictions) if args.predictions else {}
    if generated:
        records = [r for r in records if str(r["id"]) in generated] or records
    sample = random.Random(args.seed).sample(records, min(args.n, len(records)))
    table = Table(
        f"IU X-Ray, partición {args.split}: {len(sample)} estudios",
        ("Uso interno únicamente: contiene texto de IU X-Ray y su traducción.",),
        ("Estudio", "Informe de referencia (inglés)", "Referencia en español (puente)",
         "Frases no traducidas", "Informe generado"),
        tuple(iu_rows(sample, generated)),
    )
    write(args.out, [table], (f"**{DISCLAIMER}**",))
    print(f"{len(table.rows)} studies written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="source", required=True)
    nih = sub.add_parser("nih", help="publishable sample from NIH test images (no report text)")
    nih.add_argument("--engine", type=Path, default=REPO / "engines" / "cxr-unpaired-es")
    nih.add_argument("--nih", type=Path, default=DEFAULT_NIH)
    nih.add_argument("--n", type=int, default=20, help="images in the sample")
    nih.add_argument("--seed", type=int, default=0)
    nih.add_argument("--threads", type=int, default=1)
    nih.add_argument("--iu-predictions", type=Path,
                     help="scripts/iu_findings_given.py output: add those generations with "
                     "only their prompt findings")
    nih.add_argument("--iu-n", type=int, default=5)
    nih.add_argument("--out", type=Path, required=True, help=".md or .html")
    iu = sub.add_parser("iu", help="IU X-Ray references beside the generated text (local only)")
    iu.add_argument("--annotation", type=Path, default=DEFAULT_ANNOTATION)
    iu.add_argument("--split", default="test", choices=("train", "val", "test"))
    iu.add_argument("--n", type=int, default=20, help="studies in the sample")
    iu.add_argument("--seed", type=int, default=0)
    iu.add_argument("--predictions", type=Path, help="generated reports (JSONL)")
    iu.add_argument("--out", type=Path, required=True, help=".md or .html, outside the repo")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return run_nih(args) if args.source == "nih" else run_iu(args)


if __name__ == "__main__":
    sys.exit(main())
