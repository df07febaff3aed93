"""Settings: defaults, OPUS_* variables, flags, and the README table derived from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from opus.cli import _settings, main, serve
from opus.config import Settings, from_env, markdown_table, settings_fields


def test_defaults_serve_everyone_on_8080_from_opus_data() -> None:
    s = Settings()
    assert (s.host, s.port, s.data_dir, s.workers) == ("0.0.0.0", 8080, Path("opus-data"), 5)
    assert s.admin_token is None and s.log_format == "text"


def test_environment_variables_set_every_option() -> None:
    s = from_env(
        {
            "OPUS_PORT": "9001",
            "OPUS_DATA_DIR": "/tmp/x",
            "OPUS_WORKERS": "2",
            "OPUS_ACCESS_LOG": "true",
            "OPUS_COMMIT_INTERVAL_MS": "0.5",
            "OPUS_ADMIN_TOKEN": "secret",
        }
    )
    assert (s.port, s.data_dir, s.workers, s.access_log) == (9001, Path("/tmp/x"), 2, True)
    assert s.commit_interval_ms == 0.5 and s.admin_token == "secret"


def test_every_setting_is_a_serve_option_with_its_variable() -> None:
    help_text = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200).output
    table = markdown_table()
    for f in settings_fields():
        flag = "--" + f.name.replace("_", "-")
        variable = "OPUS_" + f.name.upper()
        assert flag in help_text and variable in help_text
        assert f"`{variable}`" in table


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPUS_PORT", "9100")
    monkeypatch.setenv("OPUS_LOG_FORMAT", "json")
    with serve.make_context("serve", ["--port", "9200"]) as ctx:
        chosen = _settings(ctx.params)
    assert (chosen.port, chosen.log_format) == (9200, "json")
    with serve.make_context("serve", []) as ctx:
        assert _settings(ctx.params).port == 9100


def test_readme_table_matches_the_settings() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert markdown_table() in readme, "run python -m opus.config to refresh README.md"


def test_a_bad_setting_is_a_clear_usage_error() -> None:
    result = CliRunner().invoke(main, ["serve", "--log-format", "xml"])
    assert result.exit_code == 2 and "log_format is 'text' or 'json'" in result.output
