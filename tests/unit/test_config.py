"""Configuration: one TOML file, every key overridable from the environment, clear errors."""

from pathlib import Path

import pytest

from mailserver.config import Config, ConfigError, build, config_path, demo, load


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "masante.toml"
    p.write_text(text)
    return p


def test_defaults_when_file_is_empty(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, ""), env={})
    assert cfg.ports.imaps == 993 and cfg.ports.submission == 587 and cfg.domains.patient == "patient.masante.fr"


def test_environment_overrides_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[ports]\nimaps = 2993\n[server]\nhostname = 'a.test'\n")
    cfg = load(
        p, env={"MASANTE_PORTS_IMAPS": "3993", "MASANTE_SERVER_HOSTNAME": "b.test", "MASANTE_DATABASE_ECHO": "yes"}
    )
    assert (cfg.ports.imaps, cfg.server.hostname, cfg.database.echo) == (3993, "b.test", True)


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "[keys]\nkek_file = 'k/kek.key'\n"), env={})
    assert cfg.resolve(cfg.keys.kek_file) == tmp_path / "k" / "kek.key"
    assert cfg.database_url == f"sqlite+aiosqlite:///{tmp_path / 'masante.db'}"


def test_postgresql_url_gets_the_async_driver(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "[database]\nurl = 'postgresql://u@127.0.0.1:5432/db'\n"), env={})
    assert cfg.database_url == "postgresql+asyncpg://u@127.0.0.1:5432/db"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[prots]\nimap = 1\n", {}, "unknown section [prots]"),
        ("[ports]\nimapz = 1\n", {}, "unknown key ports.imapz"),
        ("[ports]\nimap = 'x'\n", {}, "ports.imap: expected an integer"),
        ("", {"MASANTE_PORTS_IMAP": "many"}, "MASANTE_PORTS_IMAP: expected an integer"),
        ("[database]\nurl = 'mysql://x/y'\n", {}, "unsupported database 'mysql'"),
        ("[database]\nurl = 'sqlite:///:memory:'\n", {}, "would lose every message"),
        ("[ports\n", {}, "not valid TOML"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(write(tmp_path, text), env=env).database_url  # noqa: B018 - the URL is checked lazily


def test_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="masante-admin init"):
        load(tmp_path / "absent.toml", env={})


def test_config_path_order() -> None:
    assert config_path("a.toml", {"MASANTE_CONFIG": "b.toml"}) == Path("a.toml")
    assert config_path(None, {"MASANTE_CONFIG": "b.toml"}) == Path("b.toml")
    assert config_path(None, {}) == Path("var/masante.toml")


def test_demo_configuration_is_loopback_with_the_demo_ports(tmp_path: Path) -> None:
    cfg = demo(tmp_path / "masante.toml")
    assert cfg.server.bind == "127.0.0.1"
    assert (cfg.ports.mx, cfg.ports.submission, cfg.ports.submissions, cfg.ports.imap, cfg.ports.imaps) == (
        2525,
        2587,
        2465,
        2143,
        2993,
    )


def test_round_trip_through_toml(tmp_path: Path) -> None:
    cfg = demo(tmp_path / "masante.toml")
    again = build(__import__("tomllib").loads(cfg.to_toml()), {}, cfg.path)
    assert again.to_toml() == cfg.to_toml()
    assert isinstance(again, Config)
