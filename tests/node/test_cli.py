"""The command-line interface, as an administrator uses it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dicomnode.cli import main
from dicomnode.server import ReceivingNode

from .conftest import send_datasets


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomnode.cli", *args], capture_output=True, text=True, env=env
    )


def test_help_lists_commands() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for command in ("serve", "status", "migrate", "config", "echo"):
        assert command in result.stdout


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[node]\nport = -5\n")
    result = _run("--config", str(bad), "config")
    assert result.returncode == 2
    assert "node.port" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_reports_received_studies(
    node: ReceivingNode, dicom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    send_datasets(node.port, [dicom_dir / "rg1_chest_cr_uncompressed.dcm"])
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{node.data_dir}"\n')
    assert main(["--config", str(config), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["studies"] == {"received": 1}
    assert status["recent_studies"][0]["instances"] == 1
    assert main(["--config", str(config), "status"]) == 0
    assert "received 1" in capsys.readouterr().out


def test_echo_command_against_the_node(node: ReceivingNode, capsys) -> None:
    assert main(["echo", "127.0.0.1", str(node.port), "--ae-title", "CXRNODE"]) == 0
    assert "status 0" in capsys.readouterr().out


def test_status_on_unmigrated_database_says_what_to_do(tmp_path: Path, capsys) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "empty"}"\n')
    assert main(["--config", str(config), "status"]) == 2
    assert "dicomnode migrate" in capsys.readouterr().err
