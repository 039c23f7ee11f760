"""``dicomnode show`` finds the current report when a study was reported twice (an operator
requeued it after a new engine was installed): the second report names the first drafts as
predecessors (when it has a destination: the worker finds earlier drafts through their
deliveries), and show prints the second one only, the first ones counted as replaced. Without
a destination nothing names them, and the newest draft is still the one shown."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import BasicTextSRStorage, generate_uid

from dicomnode.cli import main
from dicomnode.db import StudyState
from dicomnode.server import ReceivingNode
from dicomnode.worker import ReportEngine, ReportingWorker
from engine.artifact import EngineArtifact
from engine.runtime import create_engine
from tests.node.conftest import renamed_copy, send_datasets
from tests.support.dicom_peers import start_status_scp

from .conftest import all_in_state, destination, drain, output_files, wait_until


@pytest.mark.parametrize("with_destination", [True, False])
def test_show_prints_the_newest_draft_not_the_replaced_one(
    with_destination: bool,
    make_node: Callable[..., ReceivingNode],
    report_engine: ReportEngine,
    tiny_artifact_factory: Callable[..., EngineArtifact],
    dicom_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    pacs = start_status_scp(0x0000)
    request.addfinalizer(pacs.stop)
    destinations = [destination("pacs", pacs.ae_title, pacs.port)] if with_destination else []
    node = make_node(delivery={"destinations": destinations})
    worker = ReportingWorker(node.config, node.sessions, report_engine, worker_id="w")
    study_uid = generate_uid()
    first = renamed_copy(dicom_dir / "siim_chest_cr_jpeg_baseline.dcm", study_uid)
    assert send_datasets(node.port, [first]) == [0]
    wait_until(lambda: all_in_state(node.sessions, StudyState.QUEUED, 1), "study queued")
    assert drain(worker) == 1
    first_srs = {str(pydicom.dcmread(p).SOPInstanceUID) for p in output_files(node.data_dir)}

    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{node.data_dir}"\n')
    # Another engine (other weights, so other output UIDs), then the study reported again.
    # (Seed 1 with two views is exported for the runtime's tests already: built once.)
    newer = create_engine(
        tiny_artifact_factory(seed=1, num_views=2), "onnxruntime", allow_test_artifact=True
    )
    assert main(["--config", str(config), "requeue", study_uid]) == 0
    capsys.readouterr()
    worker = ReportingWorker(node.config, node.sessions, newer, worker_id="w2")
    assert drain(worker) == 1
    assert main(["--config", str(config), "show", study_uid, "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["state"] == "reported"
    report = view["report"]
    shown = {d["sop_instance_uid"] for d in report["documents"]}
    assert shown and not shown & first_srs
    narrative = next(
        d for d in report["documents"] if d["sop_class"] == BasicTextSRStorage.name
    )
    ds = pydicom.dcmread(narrative["path"])
    first_sr_uids = {
        uid
        for uid in first_srs
        if pydicom.dcmread(node.data_dir / "outputs" / study_uid / f"{uid}.dcm").Modality == "SR"
    }
    if with_destination:
        assert ds.PredecessorDocumentsSequence  # the second draft names the first
        assert set(view["replaced_drafts"]) == first_sr_uids
        assert {d["sop_instance_uid"] for d in view["deliveries"]} >= shown
    else:
        assert "PredecessorDocumentsSequence" not in ds
        assert view["replaced_drafts"] == [] and view["deliveries"] == []
    assert report["sections"] and report["findings"]
    assert report["analysed_images"] == [str(first.SOPInstanceUID)]

    assert main(["--config", str(config), "show", study_uid]) == 0
    text = capsys.readouterr().out
    assert "BORRADOR PRELIMINAR" in text
    if with_destination:
        assert f"{len(first_sr_uids)} earlier draft(s) replaced" in text
    else:
        assert "no destination configured" in text
