"""What a new user does, through the command line only: ``dicomnode serve`` with an engine
configured, ``storescu`` of the shared chest files, then the Spanish SRs in ``data/outputs/``,
delivered to the configured destination, and ``dicomnode show`` / ``status`` printing them.

Every command runs as a subprocess, as the user runs it. No trained default engine exists yet,
so the tiny test engine relabelled ``purpose="evaluation"`` is configured through
``DICOMNODE__ENGINE__ARTIFACT`` (as ``dicomnode report``'s tests do).

The polls are set to a minute: the stability sweep, the worker's idle poll and the delivery
run all ran once at start-up, before the study arrived, so reports and deliveries that come
well within that minute came from each step waking the next, not from a poll.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import BasicTextSRStorage

from engine.artifact import EngineArtifact, copy_artifact, load_artifact, write_manifest
from tests.support.dicom_peers import free_port, start_storescp, wait_for_port

from .conftest import storescu, wait_until

ROOT = Path(__file__).resolve().parents[2]
CHEST_FILES = (
    "rg1_chest_cr_uncompressed.dcm",
    "rg1_chest_cr_j2k_lossless.dcm",
    "siim_chest_cr_jpeg_baseline.dcm",
    "siim_chest_cr_monochrome1.dcm",
)
CANINE = "highdicom_dx_canine_thorax.dcm"
WINDOW = 1.0
POLL = 60.0


@pytest.fixture(scope="module")
def evaluation_artifact(
    tiny_artifact: EngineArtifact, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    root = copy_artifact(tiny_artifact.root, tmp_path_factory.mktemp("eval") / "engine")
    manifest = load_artifact(root).manifest
    write_manifest(root, manifest.model_copy(update={"purpose": "evaluation"}))
    return root


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomnode.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def narratives(outputs: Path) -> dict[str, Path]:
    """Study Instance UID -> Basic Text SR written under ``outputs``."""
    found = {}
    for path in outputs.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.SOPClassUID == BasicTextSRStorage:
            found[str(ds.StudyInstanceUID)] = path
    return found


def received_uids(folder: Path) -> set[str]:
    uids = set()
    for path in folder.iterdir():
        try:
            uids.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
        except Exception:  # still being written by storescp: seen on a later look
            continue
    return uids


def test_serve_reports_a_pushed_study_out_of_the_box(
    evaluation_artifact: Path, dicom_dir: Path, tmp_path: Path
) -> None:
    destination = start_storescp(tmp_path / "pacs", ae_title="PACS")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "DICOMNODE__NODE__DATA_DIR": str(tmp_path / "data"),
        "DICOMNODE__NODE__PORT": str(port),
        "DICOMNODE__NODE__BIND_ADDRESS": "127.0.0.1",
        "DICOMNODE__NODE__MIN_FREE_DISK_MB": "1",
        "DICOMNODE__ENGINE__ARTIFACT": str(evaluation_artifact),
        "DICOMNODE__STABILITY__WINDOW_SECONDS": str(WINDOW),
        "DICOMNODE__STABILITY__CHECK_INTERVAL_SECONDS": str(POLL),
        "DICOMNODE__WORKER__POLL_SECONDS": str(POLL),
        "DICOMNODE__DELIVERY__CHECK_INTERVAL_SECONDS": str(POLL),
        "DICOMNODE__DELIVERY__DESTINATIONS": (
            f'[{{name = "pacs", ae_title = "PACS", host = "127.0.0.1", '
            f"port = {destination.port}}}]"
        ),
    }
    env.pop("DICOMNODE_CONFIG", None)
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        [sys.executable, "-m", "dicomnode.cli", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, serve)
        sources = [dicom_dir / name for name in (*CHEST_FILES, CANINE)]
        study_of = {
            p.name: str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID)
            for p in sources
        }
        chest = {study_of[name] for name in CHEST_FILES}
        canine = study_of[CANINE]
        storescu(port, sources)

        outputs = tmp_path / "data" / "outputs"
        # Generous bound (a loaded 2-core machine), yet well under the one-minute polls.
        written = wait_until(
            lambda: (found := narratives(outputs)) and set(found) == chest and found,
            "a Spanish SR for every chest study in data/outputs",
            timeout=45,
        )
        for path in written.values():
            ds = pydicom.dcmread(path)
            assert ds.VerificationFlag == "UNVERIFIED"
            assert any(
                "BORRADOR PRELIMINAR" in str(item.get("TextValue", ""))
                for item in ds.ContentSequence
            )
        wanted = {
            str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in written.values()
        }
        wait_until(
            lambda: wanted <= received_uids(destination.directory),
            "every narrative delivered to the destination",
            timeout=30,
        )

        status = json.loads(cli(env, "status", "--json").stdout)
        assert status["studies"].get("not_reportable") == 1
        assert status["studies"].get("failed") is None
        (refused,) = status["not_reportable_studies"]
        assert refused["study_instance_uid"] == canine and refused["reason"]
        text_status = cli(env, "status").stdout
        assert "not reportable" in text_status and canine in text_status

        for study_uid in chest:
            shown = cli(env, "show", study_uid)
            assert shown.returncode == 0, shown.stderr
            assert "BORRADOR PRELIMINAR" in shown.stdout
            assert "Hallazgos codificados" in shown.stdout
            as_json = json.loads(cli(env, "show", study_uid, "--json").stdout)
            assert as_json["state"] == "reported"
            report = as_json["report"]
            assert report["verification_flag"] == "UNVERIFIED"
            assert report["sections"] and report["findings"]
            assert "cxr-tiny-random" in report["engine"]
            sources_of_study = {
                str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                for p in sources
                if study_of[p.name] == study_uid
            }
            assert report["analysed_images"] and set(report["analysed_images"]) <= sources_of_study
            assert any(d["state"] == "delivered" for d in as_json["deliveries"])

        shown = cli(env, "show", canine)
        assert shown.returncode == 0 and "not_reportable" in shown.stdout
        assert "No report written" in shown.stdout
        assert not (outputs / canine).exists()
        unknown = cli(env, "show", "1.2.3.4.5")
        assert unknown.returncode == 2 and "no study 1.2.3.4.5" in unknown.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            code = serve.wait(timeout=60)
        finally:
            if serve.poll() is None:
                serve.kill()
            log.close()
            destination.stop()
    assert code == 0, (tmp_path / "serve.log").read_text()
