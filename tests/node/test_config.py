"""Configuration: defaults, the shipped file, environment overrides, and errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomnode.config import Config, load_config, write_effective_config
from dicomnode.exceptions import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_equals_embedded_defaults() -> None:
    assert load_config(REPO / "config" / "dicomnode.toml", environ={}) == Config()


def test_embedded_defaults_use_sqlite_under_data_dir() -> None:
    config = load_config(environ={})
    assert config.node.effective_database_url.startswith("sqlite:///")
    assert config.node.effective_database_url.endswith("/data/node.db")


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[node]\nport = 104\nae_title = "FROMFILE"\n')
    config = load_config(
        path,
        environ={
            "DICOMNODE__NODE__PORT": "11113",
            "DICOMNODE__SECURITY__ALLOWED_CALLING_AE_TITLES": '["PACS1", "PACS2"]',
        },
    )
    assert config.node.port == 11113
    assert config.node.ae_title == "FROMFILE"
    assert config.security.allowed_calling_ae_titles == ("PACS1", "PACS2")


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[node]\nae_title = "ENVFILE"\n')
    assert load_config(environ={"DICOMNODE_CONFIG": str(path)}).node.ae_title == "ENVFILE"


@pytest.mark.parametrize(
    ("toml", "key", "words"),
    [
        ("[node]\nport = 70000\n", "node.port", "less than or equal to 65535"),
        ('[node]\nae_title = "THIS_TITLE_IS_TOO_LONG"\n', "node.ae_title", "AE title"),
        ("[node]\nprot = 104\n", "node.prot", "Extra inputs"),
        ('[security]\nallowed_networks = ["10.0.0.0/33"]\n', "security.allowed_networks", "CIDR"),
        ('[routing]\nunmatched = "drop"\n', "routing.unmatched", "'ignore' or 'refuse'"),
        (
            '[[delivery.destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\n',
            "delivery.destinations.0.port",
            "Field required",
        ),
        ("[delivery.destinations.tls]\n", "delivery.destinations", ""),
        (
            '[[delivery.destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\nport = 104\n'
            'tls = { enabled = true, ca_file = "/nonexistent/ca.pem" }\n',
            "delivery.destinations.0.tls",
            "ca_file /nonexistent/ca.pem does not exist",
        ),
        (
            '[[delivery.destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\nport = 104\n'
            'receives = "some"\n',
            "delivery.destinations.0.receives",
            "'all' or 'own'",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, key: str, words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert key in str(info.value)
    assert words in str(info.value)


def test_bad_environment_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"stability\.window_seconds"):
        load_config(environ={"DICOMNODE__STABILITY__WINDOW_SECONDS": "-1"})


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken, environ={})


def test_effective_config_written_without_password(tmp_path: Path) -> None:
    config = load_config(
        environ={"DICOMNODE__NODE__DATABASE_URL": "postgresql+psycopg://node:s3cret@db/node"}
    )
    written = write_effective_config(config, tmp_path).read_text()
    assert "s3cret" not in written
    assert "node:***@db/node" in written


def test_engine_artifact_defaults_to_the_bundled_engine_and_can_be_turned_off(
    tmp_path: Path,
) -> None:
    from dicomnode.config import BUNDLED_ENGINE, bundled_engine

    assert Config().engine.artifact == bundled_engine()
    if (BUNDLED_ENGINE / "manifest.json").is_file():
        assert Config().engine.artifact == BUNDLED_ENGINE and BUNDLED_ENGINE.is_absolute()
    path = tmp_path / "node.toml"
    path.write_text('[engine]\nartifact = ""\n')
    assert load_config(path, environ={}).engine.artifact is None
    assert load_config(environ={"DICOMNODE__ENGINE__ARTIFACT": '""'}).engine.artifact is None


def test_relative_engine_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "node.toml"
    path.write_text('[engine]\nartifact = "../engines/mine"\n')
    assert load_config(path, environ={}).engine.artifact == tmp_path / "engines" / "mine"
    path.write_text(f'[engine]\nartifact = "{tmp_path / "abs"}"\n')
    assert load_config(path, environ={}).engine.artifact == tmp_path / "abs"
