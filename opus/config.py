"""Settings: declared once as (name, default, help); the CLI, the environment and the README
table are all derived from the list below."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def parse_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Comma-separated addresses or networks (`10.0.0.1, 192.168.0.0/16`)."""
    return [ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip()]


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = _setting("0.0.0.0", "Address to listen on (0.0.0.0 means every network).")
    port: int = _setting(8080, "TCP port to listen on.")
    data_dir: Path = _setting(  # noqa: RUF009 - _setting returns a dataclasses.field
        Path("opus-data"), "Folder for the database, the queue, the secret and the admin token."
    )
    admin_token: str | None = _setting(
        None, "Host's API token. Unset: generated on first start and kept in the data dir."
    )
    public_url: str | None = _setting(
        None, "URL attendees should open (for example http://10.0.0.5:8080). Unset: guessed."
    )
    workers: int = _setting(5, "Number of workers applying queued votes to the database.")
    worker_batch: int = _setting(200, "Most votes one worker claims and applies at once.")
    worker_budget_ms: float = _setting(
        8.0,
        "Longest one worker's batch should hold the event loop (milliseconds): batches are"
        " sized to fit, from the time the last ones took per vote.",
    )
    worker_linger_ms: float = _setting(
        20.0, "How long workers let queued votes gather into one batch (milliseconds)."
    )
    commit_interval_ms: float = _setting(
        1.0, "How long the vote writer gathers votes into one durable commit (milliseconds)."
    )
    max_attempts: int = _setting(
        5, "Tries before a vote that keeps failing goes to the failed (dead-letter) state."
    )
    claim_timeout_s: float = _setting(
        30.0, "Seconds after which a vote claimed by a stalled worker goes back to the queue."
    )
    max_backlog: int = _setting(
        200_000, "Votes waiting in the queue beyond which new votes get 503 and Retry-After."
    )
    max_body_bytes: int = _setting(65_536, "Largest request body accepted (bytes).")
    coalesce_ms: float = _setting(
        50.0, "Live results: at most one update per poll in this many milliseconds."
    )
    voter_results_ms: float = _setting(
        1000.0,
        "Live results on attendees' phones (a voter's socket): at most one update per poll in"
        " this many milliseconds; screens and the console get every coalesce_ms.",
    )
    max_sockets: int = _setting(
        20_000, "Most WebSocket connections at once; more are refused with a close reason."
    )
    max_sockets_per_address: int = _setting(
        50,
        "Most WebSocket connections from one client address (0: no limit; loopback is not"
        " limited).",
    )
    join_rate_per_minute: int = _setting(
        30,
        "New voters one client address may become per minute, in all rooms (0: no limit;"
        " loopback is not limited).",
    )
    identities_per_address: int = _setting(
        5,
        "Voters one client address may become in one room (0: no limit). Where many phones"
        " share one address (a guest network behind NAT), use 0 and a room passcode.",
    )
    trusted_proxies: str = _setting(
        "",
        "Addresses or networks (comma-separated) of reverse proxies whose X-Forwarded-For"
        " names the client; the header is ignored from anyone else.",
    )
    ws_heartbeat_s: float = _setting(20.0, "Seconds between pings that find dead sockets.")
    ws_send_timeout_s: float = _setting(
        10.0, "A socket that cannot take one message in this many seconds is dropped."
    )
    ws_max_queue: int = _setting(
        256, "Messages waiting for one socket beyond which it is dropped as too slow."
    )
    activity_interval_s: float = _setting(1.0, "Seconds between host activity-feed updates.")
    prune_interval_s: float = _setting(
        150.0, "Seconds between prunes of applied votes from the queue and of old relayed events."
    )
    shutdown_timeout_s: float = _setting(
        20.0, "Seconds SIGTERM waits for requests in flight before closing."
    )
    log_format: str = _setting("text", "Log lines as 'text' or 'json'.")
    log_level: str = _setting("info", "debug, info, warning or error.")
    access_log: bool = _setting(False, "Log every HTTP request (halves the request rate).")
    metrics_public: bool = _setting(
        False,
        "Serve /metrics to every address; otherwise only to the box itself and to"
        " requests with the admin token.",
    )
    venue: Path | None = _setting(  # noqa: RUF009 - _setting returns a dataclasses.field
        None,
        "A venue file (written by 'opus venue init'): this box counts the votes of the"
        " venue's other boxes, and they count its votes. Needs --box.",
    )
    box: str | None = _setting(None, "This box's name in the venue file.")
    nats_url: str | None = _setting(
        None,
        "In a venue: use this NATS server (nats://HOST:PORT) for this box's stream instead of"
        " starting the one Opus ships.",
    )
    wifi_ssid: str | None = _setting(
        None, "Venue Wi-Fi name: the screen then shows a second QR code that joins it."
    )
    wifi_password: str | None = _setting(None, "Venue Wi-Fi password, for that QR code.")
    wifi_security: str = _setting("WPA", "Venue Wi-Fi security: WPA, WEP or nopass.")

    def __post_init__(self) -> None:
        problems = []
        if self.log_format not in ("text", "json"):
            problems.append("log_format is 'text' or 'json'")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            problems.append("log_level is debug, info, warning or error")
        if not 0 < self.port < 65536:
            problems.append("port is between 1 and 65535")
        if self.workers < 1 or self.worker_batch < 1 or self.max_attempts < 1:
            problems.append("workers, worker_batch and max_attempts are at least 1")
        if self.voter_results_ms < self.coalesce_ms:
            problems.append("voter_results_ms is at least coalesce_ms")
        if self.worker_budget_ms <= 0:
            problems.append("worker_budget_ms is more than 0")
        if self.worker_linger_ms < 0 or self.commit_interval_ms < 0:
            problems.append("worker_linger_ms and commit_interval_ms are 0 or more")
        if self.prune_interval_s <= 0:
            problems.append("prune_interval_s is more than 0")
        if (
            min(
                self.max_sockets_per_address, self.join_rate_per_minute, self.identities_per_address
            )
            < 0
        ):
            problems.append(
                "max_sockets_per_address, join_rate_per_minute and"
                " identities_per_address are 0 (no limit) or more"
            )
        try:
            parse_networks(self.trusted_proxies)
        except ValueError as exc:
            problems.append(f"trusted_proxies lists addresses or networks ({exc})")
        if problems:
            raise ValueError("; ".join(problems))

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "opus.db"

    @property
    def queue_path(self) -> Path:
        return self.data_dir / "queue.db"


def settings_fields() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(Settings))


def env_name(name: str) -> str:
    return "OPUS_" + name.upper()


def _kind(f: dataclasses.Field[Any]) -> str:
    """The field's type as written ("int", "str | None", "Path", ...)."""
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _coerce(f: dataclasses.Field[Any], raw: str) -> Any:
    """A setting's value from text (an environment variable); ValueError when it is not one."""
    kind = _kind(f)
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        return float(raw)
    if kind.startswith("bool"):
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ValueError(f"{raw!r} is not true or false")
        return word in _TRUE
    if kind.startswith("Path"):
        return Path(raw)
    return raw


def _from_toml(f: dataclasses.Field[Any], value: Any) -> Any:
    """A setting's value from the settings file, where TOML already gives it a type."""
    kind = _kind(f).split(" ")[0]
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind in ("str", "Path") and isinstance(value, str):
        return Path(value) if kind == "Path" else value
    wanted = {
        "int": "a whole number",
        "float": "a number",
        "bool": "true or false",
        "Path": "a path in quotes",
    }.get(kind, "a string in quotes")
    raise ValueError(f"{f.name} must be {wanted}, not {value!r}")


class ConfigError(ValueError):
    """A setting that cannot be used: an unknown key, a bad value, a missing file."""


DEFAULT_CONFIG_FILE = Path("/etc/opus/opus.toml")
CONFIG_ENV = "OPUS_CONFIG"


def config_file(given: Path | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The settings file to read: --config, else $OPUS_CONFIG, else /etc/opus/opus.toml when
    it exists, else none."""
    environ = os.environ if environ is None else environ
    if given is not None:
        return given
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def read_toml(path: Path, error: type[ValueError], missing: str) -> dict[str, Any]:
    """A TOML file's contents; `error` (with `missing` when there is no such file) otherwise."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc})") from None


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings a TOML file sets (keys are the setting names), checked."""
    data = read_toml(path, ConfigError, "no such settings file")
    fields = {f.name: f for f in settings_fields()}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            near = difflib.get_close_matches(key.replace("-", "_"), fields, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ConfigError(f"{path}: unknown setting '{key}'{hint}")
        try:
            values[key] = _from_toml(fields[key], value)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return values


@dataclass(frozen=True, slots=True)
class Resolved:
    """The effective settings and, for each, where it came from."""

    settings: Settings
    sources: dict[str, str]  # setting name -> "default", "file PATH", "env OPUS_X", "flag --x"
    config_file: Path | None


def resolve(
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Resolved:
    """Settings by precedence, strongest first: command-line flags, OPUS_* environment
    variables, the settings file, the defaults. Raises ConfigError (one line) when a value
    cannot be used."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources = {f.name: "default" for f in settings_fields()}
    if config is not None:
        for name, value in read_config_file(config).items():
            values[name], sources[name] = value, f"file {config}"
    for f in settings_fields():
        raw = environ.get(env_name(f.name))
        if raw in (None, ""):
            continue
        try:
            values[f.name] = _coerce(f, raw)
        except ValueError:
            raise ConfigError(
                f"{env_name(f.name)}={raw!r}: {f.name} must be {_kind(f).split(' ')[0]}"
            ) from None
        sources[f.name] = f"env {env_name(f.name)}"
    for name, value in (flags or {}).items():
        if value is not None:
            values[name], sources[name] = value, "flag --" + name.replace("_", "-")
    try:
        settings = Settings(**values)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return Resolved(settings, sources, config)


def from_env(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from OPUS_* variables, then explicit overrides (the tests' way in)."""
    return resolve(None, environ, overrides).settings


def markdown_table() -> str:
    """The README's configuration table."""
    rows = ["| option | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for f in settings_fields():
        default = "(generated)" if f.name == "admin_token" else f.default
        if f.name == "public_url":
            default = "(guessed)"
        flag = "--" + f.name.replace("_", "-")
        rows.append(f"| `{flag}` | `{env_name(f.name)}` | `{default}` | {f.metadata['help']} |")
    return "\n".join(rows)


def update_readme(path: Path) -> None:
    """Rewrite the table between the README's settings markers."""
    text = path.read_text()
    start, end = "<!-- settings -->\n", "<!-- /settings -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{start}{markdown_table()}\n{end}{tail}")


if __name__ == "__main__":  # python -m opus.config: refresh the README's configuration table
    update_readme(Path(__file__).resolve().parent.parent / "README.md")
