"""Fixtures of the training tests: tiny copies of each dataset's real layout, built in tmp_path."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <uId id="CXR{n}"/>
   <MedlineCitation><Article><Abstract>
      <AbstractText Label="COMPARISON">None.</AbstractText>
      <AbstractText Label="INDICATION">Cough.</AbstractText>
      <AbstractText Label="FINDINGS">{findings}</AbstractText>
      <AbstractText Label="IMPRESSION">{impression}</AbstractText>
   </Abstract></Article></MedlineCitation>
   <MeSH>{mesh}</MeSH>
   {images}
</eCitation>
"""

IU_STUDIES = [
    (1, "The heart is normal in size. No pleural effusion or pneumothorax.", "Normal chest.",
     ["normal"]),
    (2, "Cardiomegaly. Small right pleural effusion.", "Cardiomegaly with effusion.",
     ["Cardiomegaly/mild", "Pleural Effusion/right/small"]),
    (3, "Calcified granuloma in the right upper lobe.", "No acute disease.",
     ["Calcified Granuloma/lung/upper lobe/right"]),
]


def write_png(path: Path, size: tuple[int, int] = (32, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 128).save(path)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    data = buf.getvalue().encode("utf-8")
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _openi_xml(n: int, findings: str, impression: str, mesh: list[str]) -> str:
    images = "\n".join(
        f'<parentImage id="CXR{n}_IM-000{n}-{k}001"><figureId>F{k}</figureId></parentImage>'
        for k in (1, 2)
    )
    return OPENI_XML.format(
        n=n,
        findings=findings,
        impression=impression,
        mesh="".join(f"<major>{m}</major>" for m in mesh),
        images=images,
    )


@pytest.fixture
def openi_root(tmp_path: Path) -> Path:
    """OpenI layout: ecgen-radiology/<n>.xml, NLMCXR_png/<image id>.png, DICOM metadata CSV."""
    root = tmp_path / "openi"
    xml_dir = root / "ecgen-radiology"
    xml_dir.mkdir(parents=True)
    for n, findings, impression, mesh in IU_STUDIES:
        (xml_dir / f"{n}.xml").write_text(_openi_xml(n, findings, impression, mesh), "utf-8")
        for k in (1, 2):
            write_png(root / "NLMCXR_png" / f"CXR{n}_IM-000{n}-{k}001.png")
    write_csv(
        root / "nlmcxr_dicom_metadata.csv.gz",
        ["imageid", "View Position"],
        [[f"CXR{n}_IM-000{n}-{k}001", "PA" if k == 1 else "LL"] for n, *_ in IU_STUDIES
         for k in (1, 2)],
    )
    return root


@pytest.fixture
def openi_tgz_root(tmp_path: Path) -> Path:
    """OpenI layout with the reports still packed in NLMCXR_reports.tgz."""
    root = tmp_path / "openi_tgz"
    root.mkdir()
    with tarfile.open(root / "NLMCXR_reports.tgz", "w:gz") as tar:
        for n, findings, impression, mesh in IU_STUDIES:
            data = _openi_xml(n, findings, impression, mesh).encode("utf-8")
            info = tarfile.TarInfo(f"ecgen-radiology/{n}.xml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return root


@pytest.fixture
def r2gen_root(tmp_path: Path) -> Path:
    """R2Gen layout: annotation.json and images/<id>/<n>.png."""
    root = tmp_path / "r2gen"
    ann: dict[str, list[dict[str, object]]] = {"train": [], "val": [], "test": []}
    for (n, findings, _imp, _mesh), split in zip(IU_STUDIES, ("train", "val", "test"),
                                                strict=True):
        sid = f"CXR{n}_IM-000{n}"
        ann[split].append({"id": sid, "report": findings, "split": split,
                           "image_path": [f"{sid}/0.png", f"{sid}/1.png"]})
        for k in (0, 1):
            write_png(root / "images" / sid / f"{k}.png")
    (root / "annotation.json").write_text(json.dumps(ann), "utf-8")
    return root
