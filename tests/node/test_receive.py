"""Receiving over real associations on loopback: pynetdicom and DCMTK peers, real files."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pydicom
import pynetdicom
import pytest
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from dicomnode.db import Instance, QuarantineEntry, Study, StudyState, session_scope
from dicomnode.server import ReceivingNode
from tests.support.dcmtk import dcmtk_tool

from .conftest import REAL_FILES, renamed_copy, send_datasets

needs_dcmtk = pytest.mark.skipif(
    dcmtk_tool("storescu") is None, reason="DCMTK (Debian package dcmtk) is not installed"
)

# storescu proposes only uncompressed syntaxes unless told; this is the flag per file syntax.
STORESCU_FLAG = {
    ExplicitVRLittleEndian: [],
    JPEG2000Lossless: ["-xv"],
    JPEG2000: ["-xw"],
    JPEGBaseline8Bit: ["-xy"],
}


def _data_set_offset(raw: bytes) -> int:
    """Where the data set starts: preamble, b"DICM", the (0002,0000) element, the meta group."""
    assert raw[128:132] == b"DICM"
    return 132 + 12 + int.from_bytes(raw[140:144], "little")


def _instances(node: ReceivingNode) -> dict[str, Instance]:
    with session_scope(node.sessions) as session:
        return {i.sop_instance_uid: i for i in session.scalars(select(Instance)).all()}


def _studies(node: ReceivingNode) -> dict[str, Study]:
    with session_scope(node.sessions) as session:
        return {s.study_instance_uid: s for s in session.scalars(select(Study)).all()}


def test_c_echo_pynetdicom(node: ReceivingNode) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="CXRNODE")
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    assert status.Status == 0x0000


@needs_dcmtk
def test_c_echo_dcmtk(node: ReceivingNode) -> None:
    result = subprocess.run(
        [str(dcmtk_tool("echoscu")), "-aec", "CXRNODE", "127.0.0.1", str(node.port)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@needs_dcmtk
def test_storescu_sends_every_real_file(node: ReceivingNode, dicom_dir: Path) -> None:
    for name in REAL_FILES:
        path = dicom_dir / name
        ts = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        result = subprocess.run(
            [
                str(dcmtk_tool("storescu")),
                *STORESCU_FLAG[ts],
                "-aet",
                "MODALITY",
                "-aec",
                "CXRNODE",
                "127.0.0.1",
                str(node.port),
                str(path),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"

    stored = _instances(node)
    # The two SIIM files share one SOP Instance UID with other content: the later one is the
    # current version (storage.changed_instance = "keep-latest").
    expected = {
        pydicom.dcmread(dicom_dir / n, stop_before_pixels=True).SOPInstanceUID for n in REAL_FILES
    }
    assert set(stored) == expected
    for name in REAL_FILES[:3] + REAL_FILES[4:]:
        original = pydicom.dcmread(dicom_dir / name)
        row = stored[original.SOPInstanceUID]
        on_disk = node.spool.absolute(row.path)
        data = on_disk.read_bytes()
        assert hashlib.sha256(data[_data_set_offset(data) :]).hexdigest() == row.sha256
        copy = pydicom.dcmread(on_disk)
        # Stored as received: same transfer syntax, same elements, same (compressed) pixel bytes.
        # storescu itself drops trailing padding and pads odd-length pixel data to even length.
        assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        skip = {0xFFFCFFFC, 0x7FE00010}
        assert [e for e in copy if e.tag not in skip] == [e for e in original if e.tag not in skip]
        assert copy.PixelData[: len(original.PixelData)] == original.PixelData
        assert row.transfer_syntax_uid == original.file_meta.TransferSyntaxUID
        assert row.calling_ae_title == "MODALITY"
    # The three RG1 files are one study; grouping is by Study Instance UID across associations.
    studies = _studies(node)
    rg1 = pydicom.dcmread(dicom_dir / REAL_FILES[0], stop_before_pixels=True).StudyInstanceUID
    assert studies[rg1].instance_count == 3
    assert studies[rg1].state == StudyState.RECEIVED


def test_pynetdicom_store_and_duplicates_are_idempotent(
    node: ReceivingNode, dicom_dir: Path
) -> None:
    path = dicom_dir / "rg1_chest_cr_uncompressed.dcm"
    assert send_datasets(node.port, [path]) == [0x0000]
    first = _instances(node)
    # pynetdicom sends the file's data set bytes unchanged: the spool holds exactly those bytes.
    stored = node.spool.absolute(next(iter(first.values())).path).read_bytes()
    original = path.read_bytes()
    assert stored[_data_set_offset(stored) :] == original[_data_set_offset(original) :]
    assert send_datasets(node.port, [path, path]) == [0x0000, 0x0000]
    assert _instances(node).keys() == first.keys()
    (study,) = _studies(node).values()
    assert study.instance_count == 1
    files = list(node.spool.iter_instance_files())
    assert len(files) == 1


def test_study_grouped_across_associations(node: ReceivingNode, dicom_dir: Path) -> None:
    study_uid = pydicom.uid.generate_uid()
    for name in ("rg1_chest_cr_uncompressed.dcm", "highdicom_dx_canine_thorax.dcm"):
        assert send_datasets(node.port, [renamed_copy(dicom_dir / name, study_uid)]) == [0]
    study = _studies(node)[study_uid]
    assert study.instance_count == 2
    assert study.revision == 2
    assert study.reportable


def _quarantined(node: ReceivingNode) -> list[QuarantineEntry]:
    with session_scope(node.sessions) as session:
        return list(session.scalars(select(QuarantineEntry)).all())


@pytest.mark.parametrize(
    ("mutate", "status", "reason"),
    [
        (lambda ds: delattr(ds, "StudyInstanceUID"), 0xC211, "StudyInstanceUID is missing"),
        (
            lambda ds: setattr(ds, "SeriesInstanceUID", "1.2.3.../../../etc"),
            0xC211,
            "not a valid DICOM UID",
        ),
        (lambda ds: delattr(ds, "PixelData"), 0xC212, "no Pixel Data"),
    ],
    ids=["missing-study-uid", "path-traversal-uid", "no-pixel-data"],
)
def test_bad_instances_get_status_and_quarantine(
    node: ReceivingNode, dicom_dir: Path, mutate, status: int, reason: str
) -> None:
    ds = renamed_copy(dicom_dir / "highdicom_dx_canine_thorax.dcm")
    mutate(ds)
    assert send_datasets(node.port, [ds]) == [status]
    assert _instances(node) == {}
    (entry,) = _quarantined(node)
    assert entry.status_code == status
    assert reason in entry.reason
    assert node.spool.absolute(entry.path).is_file()
    assert not any(".." in p for p in node.spool.iter_instance_files())


def test_undecodable_data_set_is_refused_and_quarantined(
    node: ReceivingNode, dicom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file whose data set ends in garbage; sent in chunks, so pynetdicom does not decode it.
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
    good = dicom_dir / "highdicom_dx_canine_thorax.dcm"
    ds = pydicom.dcmread(good)
    raw = good.read_bytes()
    meta_end = _data_set_offset(raw)
    garbage = raw[: meta_end + 300] + b"\xff" * 8
    bad = tmp_path / "truncated.dcm"
    bad.write_bytes(garbage)
    statuses = send_datasets(node.port, [bad])
    assert statuses[0] & 0xF000 == 0xC000, hex(statuses[0])
    assert ds.SOPInstanceUID not in _instances(node)
    assert len(_quarantined(node)) == 1


def test_disk_floor_refuses_before_accepting(start_node, dicom_dir: Path) -> None:
    node = start_node(node={"min_free_disk_mb": 10**9})
    assert send_datasets(node.port, [dicom_dir / "rg1_chest_cr_uncompressed.dcm"]) == [0xA700]
    assert _instances(node) == {}
    assert list(node.spool.iter_instance_files()) == []


def test_unmatched_instances_refused_when_configured(start_node, dicom_dir: Path) -> None:
    node = start_node(
        routing={"unmatched": "refuse", "rules": [{"name": "cr-only", "modalities": ["CR"]}]}
    )
    statuses = send_datasets(
        node.port,
        [dicom_dir / "highdicom_dx_canine_thorax.dcm", dicom_dir / "rg1_chest_cr_uncompressed.dcm"],
    )
    assert statuses == [0x0124, 0x0000]
    (row,) = _instances(node).values()
    assert row.matched_rule == "cr-only"


def test_unmatched_instances_accepted_and_study_ignored(start_node, dicom_dir: Path) -> None:
    node = start_node(
        routing={"unmatched": "ignore", "rules": [{"name": "cr-only", "modalities": ["CR"]}]},
        stability={"window_seconds": 0.2, "check_interval_seconds": 0.1},
    )
    assert send_datasets(node.port, [dicom_dir / "highdicom_dx_canine_thorax.dcm"]) == [0]
    (study,) = _wait_for_states(node, {StudyState.IGNORED}).values()
    assert study.reportable is False


def _wait_for_states(node: ReceivingNode, states: set[str], timeout: float = 10.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        studies = _studies(node)
        if studies and all(s.state in states for s in studies.values()):
            return studies
        time.sleep(0.05)
    raise AssertionError(f"studies did not reach {states}: {[s.state for s in studies.values()]}")


def test_calling_ae_allowlist_rejects_association(start_node, dicom_dir: Path) -> None:
    node = start_node(security={"allowed_calling_ae_titles": ["PACS"]})
    ae = AE(ae_title="INTRUDER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="CXRNODE")
    assert assoc.is_rejected
    assert send_datasets(
        node.port, [dicom_dir / "rg1_chest_cr_uncompressed.dcm"], calling_ae="PACS"
    ) == [0]


def test_network_allowlist_refuses_at_tcp_accept(start_node, tmp_path: Path) -> None:
    node = start_node(security={"allowed_networks": ["10.0.0.0/8"]})
    ae = AE(ae_title="PACS")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="CXRNODE")
    # Closed at accept, before a byte of the A-ASSOCIATE-RQ is read.
    assert not assoc.is_established and not assoc.is_rejected
    node2 = start_node(tmp_path / "other", security={"allowed_networks": ["127.0.0.0/8"]})
    assoc = ae.associate("127.0.0.1", node2.port, ae_title="CXRNODE")
    assert assoc.is_established
    assoc.release()


@pytest.mark.parametrize(
    "syntax",
    [
        pydicom.uid.ImplicitVRLittleEndian,
        pydicom.uid.DeflatedExplicitVRLittleEndian,
        pydicom.uid.RLELossless,
        pydicom.uid.JPEGLSLossless,
        pydicom.uid.JPEG2000Lossless,
    ],
    ids=lambda uid: uid.name,
)
def test_received_in_each_syntax_and_stored_as_received(
    node: ReceivingNode, dicom_dir: Path, syntax: pydicom.uid.UID
) -> None:
    ds = renamed_copy(dicom_dir / "highdicom_dx_canine_thorax.dcm")
    # The file's pixel data has an odd length, padded by one byte: trim to the image itself.
    ds.PixelData = ds.PixelData[: ds.Rows * ds.Columns * ds.SamplesPerPixel]
    pixels = ds.pixel_array.copy()
    if syntax.is_compressed:
        encoder = pydicom.pixels.get_encoder(syntax)
        if not encoder.is_available:
            pytest.skip(f"no {syntax.name} encoder here: {encoder.missing_dependencies}")
        ds.compress(syntax)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.set_original_encoding(
            syntax.is_implicit_VR, syntax.is_little_endian, ds.original_character_set
        )
    assert send_datasets(node.port, [ds]) == [0x0000]
    (row,) = _instances(node).values()
    assert row.transfer_syntax_uid == syntax
    stored = pydicom.dcmread(node.spool.absolute(row.path))
    assert stored.file_meta.TransferSyntaxUID == syntax
    assert (stored.pixel_array == pixels).all()
