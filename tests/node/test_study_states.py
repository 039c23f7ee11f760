"""The study life in one place: the transition table, the named transitions, requeue."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicomnode.cli import main
from dicomnode.db import Study, StudyState, session_scope, utcnow
from dicomnode.exceptions import StudyStateError
from dicomnode.server import ReceivingNode
from dicomnode.studies import (
    TRANSITIONS,
    claim,
    fail,
    finish,
    mark_stable_studies,
    release,
    requeue,
)

from .conftest import renamed_copy, send_datasets


def _study(state: StudyState = StudyState.RECEIVED, reportable: bool = True) -> Study:
    return Study(
        study_instance_uid="1.2.3", state=state, reportable=reportable, attempts=0, requeue_count=0
    )


def test_every_state_has_an_entry_and_set_state_enforces_the_table() -> None:
    assert set(TRANSITIONS) == set(StudyState)
    study = _study()
    with pytest.raises(StudyStateError, match="cannot go from received to reported"):
        study.set_state(StudyState.REPORTED)
    assert study.state == StudyState.RECEIVED
    for source, targets in TRANSITIONS.items():
        for target in StudyState:
            study = _study(source)
            if target in targets:
                study.set_state(target)
                assert study.state == target
            else:
                with pytest.raises(StudyStateError):
                    study.set_state(target)


def test_named_transitions_of_the_worker() -> None:
    study = _study(StudyState.QUEUED)
    until = utcnow() + timedelta(minutes=10)
    claim(study, "w1", until)
    assert (study.state, study.lease_owner, study.lease_expires_at) == ("reporting", "w1", until)
    release(study, "engine error: boom")
    assert (study.state, study.lease_owner, study.error) == ("queued", None, "engine error: boom")
    claim(study, "w1", until)
    finish(study)
    assert (study.state, study.lease_owner, study.error) == ("reported", None, None)
    with pytest.raises(StudyStateError):
        claim(study, "w2", until)  # a reported study is not claimed again without a requeue
    study = _study(StudyState.QUEUED)
    claim(study, "w1", until)
    fail(study, "no result")
    assert (study.state, study.error, study.lease_owner) == ("failed", "no result", None)
    requeue(study)
    assert (study.state, study.error, study.requeue_count) == ("queued", None, 1)
    assert study.requeued_at is not None
    with pytest.raises(StudyStateError, match="no instance that matches a routing rule"):
        requeue(_study(StudyState.FAILED, reportable=False))


def test_stable_is_seen_by_the_scheduler(start_node, dicom_dir: Path) -> None:
    node = start_node()
    study_uid = generate_uid()
    assert send_datasets(
        node.port, [renamed_copy(dicom_dir / "highdicom_dx_canine_thorax.dcm", study_uid)]
    ) == [0]
    later = utcnow() + timedelta(hours=2)
    with session_scope(node.sessions) as session:
        assert mark_stable_studies(session, timedelta(seconds=60), now=later) == [
            (study_uid, StudyState.STABLE)
        ]
    with session_scope(node.sessions) as session:
        assert session.scalars(select(Study.state)).one() == StudyState.STABLE


def _cli_config(node: ReceivingNode, tmp_path: Path) -> str:
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{node.data_dir}"\n')
    return str(config)


def test_requeue_command(node: ReceivingNode, dicom_dir: Path, tmp_path: Path, capsys) -> None:
    uids = [generate_uid() for _ in range(3)]
    for uid in uids:
        send_datasets(node.port, [renamed_copy(dicom_dir / "highdicom_dx_canine_thorax.dcm", uid)])
    with session_scope(node.sessions) as session:
        for study in session.scalars(select(Study)):
            study.state = StudyState.FAILED
            study.attempts = 4
            study.error = "engine error"
    config = _cli_config(node, tmp_path)
    assert main(["--config", config, "requeue", uids[0]]) == 0
    assert f"requeued {uids[0]}" in capsys.readouterr().out
    with session_scope(node.sessions) as session:
        states = {s.study_instance_uid: s for s in session.scalars(select(Study))}
    first = states[uids[0]]
    assert (first.state, first.attempts, first.error, first.requeue_count) == ("queued", 0, None, 1)
    assert states[uids[1]].state == StudyState.FAILED
    assert main(["--config", config, "requeue", "--failed"]) == 0
    assert capsys.readouterr().out.count("requeued ") == 2
    assert main(["--config", config, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert {r["study_instance_uid"] for r in status["requeued_studies"]} == set(uids)
    assert status["studies"] == {"queued": 3}
    # A queued study, an unknown UID, or no argument: an error saying what to do, no change.
    assert main(["--config", config, "requeue", uids[0]]) == 2
    assert "cannot go from queued to queued" in capsys.readouterr().err
    assert main(["--config", config, "requeue", "1.2.3.4"]) == 2
    assert "no study 1.2.3.4" in capsys.readouterr().err
    assert main(["--config", config, "requeue"]) == 2


def test_the_table_names_real_transition_functions() -> None:
    from dicomnode import studies

    for targets in TRANSITIONS.values():
        for name in targets.values():
            assert callable(getattr(studies, name)), name
