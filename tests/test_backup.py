"""`opus backup` while a real server takes votes, `opus restore` into a fresh data dir: every
vote acknowledged before the backup began is counted by the restored server."""

from __future__ import annotations

import asyncio
import itertools
import tarfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner, Result

from conftest import Api, ServerProcess
from opus.cli import main


def opus(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


async def test_a_backup_taken_while_votes_flow_restores_every_acknowledged_vote(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = ServerProcess(tmp_path / "data")
    server.start()
    restored = ServerProcess(tmp_path / "restored")
    try:
        api = Api(http, server.base)
        room = await api.room()
        polls = [await api.poll(room["id"], ["A", "B", "C"]) for _ in range(2)]
        voters = [await api.join(room["code"]) for _ in range(150)]
        acknowledged: list[tuple[dict[str, Any], str, float]] = []  # voter, event id, when
        loop = asyncio.get_running_loop()
        jobs = iter([(v, p) for p in polls for v in voters])

        async def vote_steadily() -> None:
            for n, (voter, poll) in zip(itertools.count(), jobs, strict=False):
                option = poll["options"][n % 3]["id"]
                status, body = await api.vote(voter, poll["id"], [option])
                assert status == 202, body
                acknowledged.append((voter, body["event_id"], loop.time()))

        voting = [asyncio.create_task(vote_steadily()) for _ in range(4)]
        while len(acknowledged) < 80:  # noqa: ASYNC110 - a count, not an event
            await asyncio.sleep(0.01)
        archive = tmp_path / "backups" / "opus.tar.gz"
        started = loop.time()
        made = await asyncio.to_thread(
            opus, "backup", str(archive), "--data-dir", str(server.data_dir)
        )
        assert made.exit_code == 0, made.output
        assert "counted votes" in made.output
        await asyncio.gather(*voting)
        before = [(v, e) for v, e, at in acknowledged if at < started]
        # (measured here: about 20 votes were acknowledged during the 0.1 s backup)
        assert 80 <= len(before) < len(acknowledged) == 300
        with tarfile.open(archive) as tar:
            # (no admin_token file: this server takes its token from OPUS_ADMIN_TOKEN)
            assert set(tar.getnames()) == {
                "opus-backup.json",
                "opus.db",
                "queue.db",
                "secret",
                "node_id",
            }
        assert archive.stat().st_mode & 0o777 == 0o600

        # The data dir is in use: restoring into it is refused and changes nothing.
        refused = await asyncio.to_thread(
            opus, "restore", str(archive), "--data-dir", str(server.data_dir)
        )
        assert refused.exit_code == 1 and "in use by a running Opus" in refused.output
        assert f"port {server.port}" in refused.output
        assert server.terminate() == 0

        done = opus("restore", str(archive), "--data-dir", str(restored.data_dir))
        assert done.exit_code == 0, done.output
        assert "Restored the backup" in done.output
        restored.start()
        api = Api(http, restored.base)
        # Voter tokens still work (the signing secret came back), and every vote that was
        # acknowledged before the backup began is counted.
        for voter, event_id in before:
            assert (await api.settled(voter, event_id))["status"] == "counted"
        totals = [(await api.results(p["id"]))["total_votes"] for p in polls]
        assert len(before) <= sum(totals) <= len(acknowledged)
    finally:
        server.stop()
        restored.stop()


def test_restore_moves_the_replaced_files_aside_and_refuses_other_files(
    tmp_path: Path, server: ServerProcess
) -> None:
    server.start()
    assert server.terminate() == 0
    archive = tmp_path / "b.tar.gz"
    assert opus("backup", str(archive), "--data-dir", str(server.data_dir)).exit_code == 0
    secret = (server.data_dir / "secret").read_bytes()
    result = opus("restore", str(archive), "--data-dir", str(server.data_dir))
    assert result.exit_code == 0, result.output
    aside = next(server.data_dir.glob("pre-restore-*"))
    assert f"The files it replaced are in {aside}" in result.output
    assert (aside / "opus.db").is_file() and (server.data_dir / "opus.db").is_file()
    assert (server.data_dir / "secret").read_bytes() == secret
    server.start()  # the restored data dir serves
    assert server.terminate() == 0

    not_a_backup = tmp_path / "x.tar.gz"
    not_a_backup.write_bytes(b"hello")
    result = opus("restore", str(not_a_backup), "--data-dir", str(tmp_path / "fresh"))
    assert result.exit_code == 1 and "is not an Opus backup" in result.output
    assert not (tmp_path / "fresh" / "opus.db").exists()
    result = opus("backup", str(tmp_path / "y.tar.gz"), "--data-dir", str(tmp_path / "none"))
    assert result.exit_code == 1 and "No database in" in result.output


@pytest.mark.parametrize("name", ["../escape", "opus.db"])
def test_restore_checks_what_the_archive_holds(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "evil.tar.gz"
    payload = tmp_path / "payload"
    payload.write_text("not a database")
    manifest = tmp_path / "opus-backup.json"
    manifest.write_text(
        '{"format": 1, "created_at": "x", "opus_version": "0", '
        '"schema_version": 1, "rooms": 0, "polls": 0, "votes": 0, '
        '"queued": 0, "failed": 0}'
    )
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(manifest, arcname="opus-backup.json")
        tar.add(payload, arcname=name)
    result = opus("restore", str(archive), "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 1, result.output
    assert "not an Opus backup" in result.output or "cannot be read" in result.output
    assert not (tmp_path / "escape").exists() and not (tmp_path / "data" / "opus.db").exists()
