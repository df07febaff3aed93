"""The operator's commands against real data dirs and real servers: settings precedence and
`config show`, `doctor`, `queue failed | retry | prune`, `export`, `admin token`."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner, Result

from conftest import ADMIN, Api, ServerProcess, free_port
from opus.cli import _settings, main, serve


def opus(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def no_opus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests below set what they need; nothing leaks in from the machine."""
    import os

    for name in list(os.environ):
        if name.startswith("OPUS_"):
            monkeypatch.delenv(name)


# -- settings -----------------------------------------------------------------------------


def test_flags_beat_the_environment_which_beats_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_opus_env: None
) -> None:
    config = tmp_path / "opus.toml"
    config.write_text(
        'port = 9001\nworkers = 3\nlog_level = "warning"\nadmin_token = "token-from-the-file"\n'
    )
    monkeypatch.setenv("OPUS_WORKERS", "4")
    monkeypatch.setenv("OPUS_LOG_LEVEL", "debug")
    with serve.make_context("serve", ["--config", str(config), "--log-level", "error"]) as ctx:
        chosen = _settings(ctx.params, ctx)
    assert (chosen.port, chosen.workers, chosen.log_level) == (9001, 4, "error")
    assert chosen.admin_token == "token-from-the-file" and chosen.host == "0.0.0.0"

    shown = opus("config", "show", "--config", str(config), "--log-level", "error")
    assert shown.exit_code == 0, shown.output
    lines = {line.split()[0]: line for line in shown.output.splitlines()}
    assert lines["port"].split()[1:] == ["9001", "file", str(config)]
    assert lines["workers"].split()[1:] == ["4", "env", "OPUS_WORKERS"]
    assert lines["log_level"].split()[1:] == ["error", "flag", "--log-level"]
    assert lines["host"].split()[1:] == ["0.0.0.0", "default"]
    assert "token-from-the-file" not in shown.output and "(19 characters)" in lines["admin_token"]

    # OPUS_CONFIG names the file as --config does.
    monkeypatch.setenv("OPUS_CONFIG", str(config))
    shown = opus("config", "show")
    assert f"Settings file: {config}" in shown.output
    assert "9001" in next(x for x in shown.output.splitlines() if x.startswith("port "))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("prot = 9000\n", "unknown setting 'prot' (did you mean 'port'?)"),
        ('port = "9000"\n', "port must be a whole number, not '9000'"),
        ("access_log = 1\n", "access_log must be true or false, not 1"),
        ("port = 70000\n", "port is between 1 and 65535"),
        ("port = \n", "not valid TOML"),
    ],
)
def test_a_bad_settings_file_is_a_one_line_error(
    tmp_path: Path, content: str, message: str, no_opus_env: None
) -> None:
    config = tmp_path / "opus.toml"
    config.write_text(content)
    for command in (["serve"], ["config", "show"], ["doctor"]):
        result = opus(*command, "--config", str(config))
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_a_missing_file_or_a_bad_variable_is_a_one_line_error(
    tmp_path: Path, no_opus_env: None
) -> None:
    result = opus("serve", "--config", str(tmp_path / "none.toml"))
    assert result.exit_code == 2 and "no such settings file" in result.output
    result = opus("config", "show", env={"OPUS_PORT": "eighty"})
    assert result.exit_code == 2 and "OPUS_PORT" in result.output
    assert len(result.output.strip().splitlines()) == 1
    # A command that has no --port option still reads (and checks) the variable.
    result = opus("queue", "stats", "--data-dir", str(tmp_path), env={"OPUS_WORKERS": "x"})
    assert result.exit_code == 2 and "OPUS_WORKERS='x'" in result.output


async def test_serve_takes_its_token_and_prune_schedule_from_the_settings_file(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    config = tmp_path / "opus.toml"
    config.write_text('admin_token = "from-the-file"\nprune_interval_s = 0.5\n')
    server = ServerProcess(tmp_path / "data", OPUS_CONFIG=str(config))
    del server.env["OPUS_ADMIN_TOKEN"]
    server.start()
    try:
        api = Api(http, server.base)
        api.admin = {"Authorization": "Bearer from-the-file"}
        room = await api.room()
        poll = await api.poll(room["id"])
        voters = [await api.join(room["code"]) for _ in range(3)]
        for voter in voters:
            status, _ = await api.vote(voter, poll["id"], [poll["options"][0]["id"]])
            assert status == 202
        assert (await api.total_when(poll["id"], 3))["total_votes"] == 3

        # Applied votes leave the queue on the server's own schedule (every 0.5 s here).
        def queue_stats() -> str:
            return opus("queue", "stats", "--data-dir", str(server.data_dir)).output

        # (A batch is in the results once committed, and marked done after its fsync.)
        deadline = time.monotonic() + 20
        while not all(f"{s:8} 0" in queue_stats() for s in ("ready", "claimed", "done")):
            assert time.monotonic() < deadline, queue_stats()
            await asyncio.sleep(0.2)
        assert (await api.results(poll["id"]))["total_votes"] == 3
        assert server.terminate() == 0
    finally:
        server.stop()


# -- doctor -------------------------------------------------------------------------------


def _checks(output: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in output.splitlines():
        status, _, rest = line.partition("  ")
        if status.strip() in ("OK", "WARN", "FAIL"):
            name, _, message = rest.strip().partition(" ")
            if name == "data":  # "data dir"
                name, _, message = "data dir", "", message.removeprefix("dir").strip()
            found[name] = (status.strip(), message.strip())
    return found


async def test_doctor_on_a_served_then_stopped_data_dir(
    server: ServerProcess, http: aiohttp.ClientSession, no_opus_env: None
) -> None:
    server.start()
    api = Api(http, server.base)
    room = await api.room()
    poll = await api.poll(room["id"])
    status, _ = await api.vote(await api.join(room["code"]), poll["id"], [poll["options"][1]["id"]])
    assert status == 202
    await api.total_when(poll["id"], 1)
    args = [
        "doctor",
        "--data-dir",
        str(server.data_dir),
        "--port",
        str(server.port),
        "--host",
        "127.0.0.1",
        "--min-free-mb",
        "1",
    ]
    result = await asyncio.to_thread(opus, *args)
    assert result.exit_code == 0, result.output
    checks = _checks(result.output)
    assert set(checks) == {
        "data dir",
        "disk",
        "port",
        "network",
        "limits",
        "clock",
        "database",
        "queue",
    }
    assert (
        checks["port"][0] == "OK"
        and "served by the Opus running on this data dir" in (checks["port"][1])
    )
    assert checks["database"][0] == "OK" and "journal wal" in checks["database"][1]
    assert "integrity ok" in checks["database"][1]
    assert checks["queue"] == ("OK", "0 waiting, 1 done, 0 failed")
    assert checks["network"] == ("WARN", checks["network"][1])  # 127.0.0.1 only: phones cannot
    assert "0 failed" in result.output.splitlines()[-1]

    assert server.terminate() == 0
    result = opus(*args)
    assert result.exit_code == 0, result.output
    assert _checks(result.output)["port"] == ("OK", f"127.0.0.1:{server.port} is free")


@pytest.fixture
def listener() -> Iterator[int]:
    """A port held by a program that is not Opus."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_doctor_fails_a_bad_data_dir_a_taken_port_and_a_clock_behind(
    tmp_path: Path, listener: int, no_opus_env: None
) -> None:
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("oops")
    result = opus(
        "doctor", "--data-dir", str(not_a_dir), "--host", "127.0.0.1", "--port", str(listener)
    )
    assert result.exit_code == 1, result.output
    checks = _checks(result.output)
    assert checks["data dir"] == ("FAIL", f"{not_a_dir} is a file, not a folder")
    assert checks["port"] == ("FAIL", f"port {listener} is taken by another program")

    # A data dir whose newest record is from the future: this box's clock went back.
    data = tmp_path / "good"
    data.mkdir()
    with closing(sqlite3.connect(data / "opus.db")) as db:
        db.executescript(
            "PRAGMA user_version = 1; CREATE TABLE rooms (created_at TEXT);"
            "CREATE TABLE polls (created_at TEXT); CREATE TABLE votes (counted_at TEXT);"
            "CREATE TABLE outbox (created_at TEXT);"
            "INSERT INTO rooms VALUES ('2099-01-01T00:00:00.000Z');"
        )
    result = opus(
        "doctor",
        "--data-dir",
        str(data),
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--min-free-mb",
        "1",
    )
    assert result.exit_code == 1, result.output
    status, message = _checks(result.output)["clock"]
    assert status == "FAIL" and "behind the newest record (2099-01-01" in message
    assert _checks(result.output)["data dir"][0] == "OK"


# -- the queue ----------------------------------------------------------------------------


async def test_a_dead_lettered_vote_is_retried_by_id_then_pruned(
    tmp_path: Path, http: aiohttp.ClientSession, no_opus_env: None
) -> None:
    server = ServerProcess(tmp_path / "data", OPUS_MAX_ATTEMPTS="2")
    server.start()
    try:
        api = Api(http, server.base)
        room = await api.room()
        poll = await api.poll(room["id"])
        poisoned, healthy = await api.join(room["code"]), await api.join(room["code"])

        def sql(statement: str) -> None:
            with closing(sqlite3.connect(server.data_dir / "opus.db", timeout=30)) as db:
                db.execute(statement)

        # A real SQLite failure for one voter's votes, as a broken disk would give.
        await asyncio.to_thread(
            sql,
            "CREATE TRIGGER poison BEFORE INSERT ON votes WHEN NEW.voter_id = '"
            + poisoned["voter_id"]
            + "' BEGIN SELECT RAISE(ABORT, 'disk trouble'); END",
        )
        option = poll["options"][0]["id"]
        _, bad = await api.vote(poisoned, poll["id"], [option])
        _, good = await api.vote(healthy, poll["id"], [option])
        assert (await api.settled(healthy, good["event_id"]))["status"] == "counted"
        data_dir = ["--data-dir", str(server.data_dir)]
        deadline = time.monotonic() + 20
        while (
            "failed   1" not in (await asyncio.to_thread(opus, "queue", "stats", *data_dir)).output
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        listed = await asyncio.to_thread(opus, "queue", "failed", *data_dir)
        line = next(x for x in listed.output.splitlines() if bad["event_id"] in x)
        assert "attempts=2" in line and "disk trouble" in line
        message_id = line.split()[0]
        assert (await api.receipt(poisoned, bad["event_id"]))["status"] == "queued"

        await asyncio.to_thread(sql, "DROP TRIGGER poison")
        unknown = await asyncio.to_thread(opus, "queue", "retry", "nonexistent", *data_dir)
        assert unknown.exit_code == 1 and "No failed message has the id" in unknown.output
        retried = await asyncio.to_thread(opus, "queue", "retry", message_id, *data_dir)
        assert retried.exit_code == 0 and "Returned 1 message" in retried.output
        assert (await api.settled(poisoned, bad["event_id"]))["status"] == "counted"
        assert (await api.results(poll["id"]))["total_votes"] == 2

        stats = (await asyncio.to_thread(opus, "queue", "stats", *data_dir)).output
        assert "failed   0" in stats and "done     2" in stats
        kept = await asyncio.to_thread(opus, "queue", "prune", "--older-than", "1h", *data_dir)
        assert "Pruned 0" in kept.output
        pruned = await asyncio.to_thread(opus, "queue", "prune", *data_dir)
        assert pruned.exit_code == 0 and "Pruned 2 applied message(s)" in pruned.output
        assert "done     0" in (await asyncio.to_thread(opus, "queue", "stats", *data_dir)).output
        assert (await api.results(poll["id"]))["total_votes"] == 2  # the database keeps them
        bad_duration = await asyncio.to_thread(
            opus, "queue", "prune", "--older-than", "soon", *data_dir
        )
        assert bad_duration.exit_code == 2 and "not a duration" in bad_duration.output
    finally:
        server.stop()


# -- export -------------------------------------------------------------------------------


async def test_export_a_room_by_code_or_id_as_json_and_csv(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path, no_opus_env: None
) -> None:
    server.start()
    api = Api(http, server.base)
    room = await api.room("Physics 101")
    first = await api.poll(room["id"], ["Tea", "Coffee"])
    second = await api.poll(room["id"], ["A", "B", "C"], kind="multiple")
    draft = await api.poll(room["id"], ["Yes", "No"], open=False)
    for i in range(3):
        voter = await api.join(room["code"])
        assert (await api.vote(voter, first["id"], [first["options"][i % 2]["id"]]))[0] == 202
        ab = [second["options"][0]["id"], second["options"][1]["id"]]
        assert (await api.vote(voter, second["id"], ab))[0] == 202
    await api.total_when(first["id"], 3)
    await api.total_when(second["id"], 3)
    data_dir = ["--data-dir", str(server.data_dir)]

    typed = room["code"].lower()[:4] + "-" + room["code"].lower()[4:]  # as a person types it
    result = await asyncio.to_thread(opus, "export", typed, *data_dir)
    assert result.exit_code == 0, result.output
    exported = json.loads(result.stdout)
    assert exported["room"]["title"] == "Physics 101"
    polls = {p["poll"]["id"]: p for p in exported["polls"]}
    assert list(polls) == [first["id"], second["id"], draft["id"]]
    assert polls[first["id"]]["results"]["total_votes"] == 3
    assert [o["votes"] for o in polls[first["id"]]["results"]["options"]] == [2, 1]
    assert len(polls[second["id"]]["votes"]) == 3 and polls[draft["id"]]["votes"] == []

    out = tmp_path / "room.csv"
    result = await asyncio.to_thread(
        opus, "export", room["id"], "--format", "csv", "--output", str(out), *data_dir
    )
    assert result.exit_code == 0 and f"Wrote {out}" in result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    votes = [r for r in rows if r["record"] == "vote"]
    assert sum(r["poll_id"] == second["id"] for r in votes) == 6  # two options each
    assert {
        (r["option_label"], r["votes"])
        for r in rows
        if r["record"] == "result" and r["poll_id"] == first["id"]
    } == {("Tea", "2"), ("Coffee", "1")}
    assert {r["question"] for r in rows} == {"Which one?"}

    # The API gives the same CSV (one implementation), and JSON with the same polls.
    status, text = await api.call(
        "GET", f"/api/v1/rooms/{room['id']}/export?format=csv", headers=api.admin
    )
    assert status == 200 and text == out.read_bytes().decode()
    status, body = await api.call("GET", f"/api/v1/rooms/{room['id']}/export", headers=api.admin)
    assert status == 200 and [p["poll"]["id"] for p in body["polls"]] == list(polls)
    status, body = await api.call(
        "GET", f"/api/v1/rooms/{room['id']}/export?format=xml", headers=api.admin
    )
    assert status == 400 and body["error"]["code"] == "invalid_format"
    status, body = await api.call("GET", f"/api/v1/rooms/{room['id']}/export")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await api.call("GET", "/api/v1/rooms/nope/export", headers=api.admin)
    assert status == 404 and body["error"]["code"] == "room_not_found"

    missing = await asyncio.to_thread(opus, "export", "ZZZZ-ZZZZ", *data_dir)
    assert missing.exit_code == 1 and "No room has the id or code" in missing.output


# -- the admin token ----------------------------------------------------------------------


async def test_admin_token_rotation_takes_effect_at_the_restart(
    tmp_path: Path, no_opus_env: None
) -> None:
    server = ServerProcess(tmp_path / "data")
    del server.env["OPUS_ADMIN_TOKEN"]
    server.start()
    try:
        data_dir = ["--data-dir", str(server.data_dir)]
        shown = await asyncio.to_thread(opus, "admin", "token", *data_dir)
        old = shown.stdout.strip()
        assert old == (server.data_dir / "admin_token").read_text().strip()
        assert "admin_token" in shown.stderr

        async def host_call(token: str) -> int:
            async with aiohttp.ClientSession() as session:  # no connection kept across restarts
                status, _ = await Api(session, server.base).call(
                    "POST",
                    "/api/v1/rooms",
                    json={"title": "t"},
                    headers={"Authorization": f"Bearer {token}"},
                )
            return status

        assert await host_call(old) == 201
        rotated = await asyncio.to_thread(opus, "admin", "token", "--rotate", *data_dir)
        assert rotated.exit_code == 0
        new = rotated.stdout.strip()
        assert new != old and new == (server.data_dir / "admin_token").read_text().strip()
        assert (server.data_dir / "admin_token").stat().st_mode & 0o777 == 0o600
        assert "accepts the old token until it restarts" in rotated.stderr
        assert await host_call(old) == 201  # as the command said

        assert server.terminate() == 0
        server.start()
        assert await host_call(new) == 201
        assert await host_call(old) == 401

        env = {"OPUS_ADMIN_TOKEN": ADMIN}
        noted = await asyncio.to_thread(opus, "admin", "token", "--rotate", *data_dir, env=env)
        assert "has no effect" in noted.stderr and "OPUS_ADMIN_TOKEN" in noted.stderr
        shown = await asyncio.to_thread(opus, "admin", "token", *data_dir, env=env)
        assert shown.stdout.strip() == ADMIN and "OPUS_ADMIN_TOKEN" in shown.stderr
    finally:
        server.stop()


def test_two_servers_cannot_share_a_data_dir(tmp_path: Path, no_opus_env: None) -> None:
    first = ServerProcess(tmp_path / "data")
    first.start()
    try:
        second = ServerProcess(tmp_path / "data")
        with pytest.raises(RuntimeError, match="already served by a running Opus"):
            second.start()
    finally:
        first.stop()


@pytest.mark.parametrize("name", ["secret", "admin_token", "node_id"])
@pytest.mark.parametrize("content", ["", "short\n"])
def test_an_empty_or_short_kept_file_stops_the_start_with_what_to_do(
    tmp_path: Path, no_opus_env: None, name: str, content: str
) -> None:
    """What a power cut left of a file written before files were written whole: never used
    (an empty secret would make voter tokens forgeable, an empty admin token open the host
    console), and the error names the file and the way out."""
    data = tmp_path / "data"
    server = ServerProcess(data, OPUS_ADMIN_TOKEN="")
    server.start()
    assert server.terminate() == 0
    kept = (data / name).read_text()
    (data / name).write_text(content)
    with pytest.raises(RuntimeError, match="server exited") as refused:
        server.start()
    message = str(refused.value)
    assert str(data / name) in message and "opus restore" in message, message
    assert ("empty" if not content else "cut short") in message
    assert (data / name).read_text() == content  # left for the operator to look at
    (data / name).write_text(kept)
    server.start()  # the file put back, it starts
    assert server.terminate() == 0


def test_kept_files_are_written_whole_and_private(tmp_path: Path) -> None:
    from opus import files

    target = tmp_path / "token"
    files.write_whole(target, b"first\n")
    files.write_whole(target, b"second\n")
    assert target.read_bytes() == b"second\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["token"]  # no temporary file left


def test_an_empty_token_is_never_the_admin_token() -> None:
    from opus.auth import same_token

    assert not same_token("", "")
    assert not same_token("x", "")
    assert same_token("abc", "abc") and not same_token("abd", "abc")
