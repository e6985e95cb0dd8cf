"""The charge journal: a /v1 answer leaves before its charge is stored, and a process killed in between loses
no charge. The processes here are real and really killed (SIGKILL); the store is a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import openai
import pytest
from fakes import FakeLLMServer
from test_gateway_openai import ask, start_gateway

from gofannon.kernel import Kernel
from gofannon.services import charge_journal, users
from gofannon.web.keys import KERNEL

UID = "dev_stub:alice"
REPO = Path(__file__).resolve().parent.parent

# A process that takes charges the way /v1 does (journaled, stored in the background) and is killed with
# SIGKILL before the background writes can run: the journal line is all that is left of each charge.
KILLED = r"""
import asyncio, os, signal, sys
from gofannon.kernel import Kernel
from gofannon.settings import Settings
from gofannon.services import users

async def main():
    kernel = Kernel(Settings.load({"APP_ENV": "test", "GOFANNON_DATA_DIR": sys.argv[1],
                                   "GOFANNON_SANDBOX_POOL_SIZE": "0", "GOFANNON_STORAGE": sys.argv[4],
                                   "REDIS_URL": sys.argv[5]}), role="cli")
    await kernel.open()
    await users.get_or_create_user(kernel, sys.argv[2])
    for i in range(int(sys.argv[3])):
        assert users.charge_later(kernel, sys.argv[2], 0.5, {"i": i})
    os.kill(os.getpid(), signal.SIGKILL)  # nothing awaited: no charge reached the store

asyncio.run(main())
"""


def kill_while_charging(data_dir: Path, n: int, storage: str = "sqlite", redis_url: str = "") -> None:
    proc = subprocess.run([sys.executable, "-c", KILLED, str(data_dir), UID, str(n), storage, redis_url], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr


def journals(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "journal").glob("charges-*.log"))


async def open_kernel(make_settings: Callable[..., Any], **env: str) -> Kernel:
    kernel = Kernel(make_settings(GOFANNON_SANDBOX_POOL_SIZE="0", **env), role="cli")
    await kernel.open()
    return kernel


@pytest.mark.parametrize("storage", ["sqlite", "redis"])
async def test_charges_of_a_killed_process_are_stored_once_by_the_next_start(
        make_settings: Callable[..., Any], tmp_path: Path, storage: str, request: pytest.FixtureRequest) -> None:
    data = tmp_path / "data"
    env = {"GOFANNON_STORAGE": storage}
    if storage == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    kill_while_charging(data, 7, storage, env.get("REDIS_URL", ""))
    left = journals(data)
    assert len(left) == 1 and len(charge_journal.pending_in(left[0].read_text())) == 7
    kernel = await open_kernel(make_settings, **env)  # replays at start
    try:
        user = await users.get_or_create_user(kernel, UID)
        assert user["usageInfo"]["spendRemaining"] == pytest.approx(100.0 - 7 * 0.5)
        assert sorted(e["metadata"]["i"] for e in user["usageInfo"]["usage"]) == list(range(7))
    finally:
        await kernel.close()
    assert journals(data) == []  # replayed and removed; this kernel stopped cleanly and left none
    again = await open_kernel(make_settings, **env)
    try:  # a second start finds nothing to replay: no charge twice
        assert (await users.get_or_create_user(again, UID))["usageInfo"]["spendRemaining"] == pytest.approx(96.5)
    finally:
        await again.close()


async def test_a_journaled_charge_already_stored_is_not_stored_again(
        make_settings: Callable[..., Any], tmp_path: Path) -> None:
    data = tmp_path / "data"
    kill_while_charging(data, 3)
    (first_uid, first_entry), *_ = charge_journal.pending_in(journals(data)[0].read_text())
    # The process got as far as storing the first charge (entry and spendRemaining in one transaction)
    # but died before marking it done in its journal.
    kernel = Kernel(make_settings(GOFANNON_SANDBOX_POOL_SIZE="0"), role="cli")
    kernel.store = kernel.open_store()
    await kernel.store.open()
    await users.store_charges(kernel, first_uid, [first_entry])
    await kernel.store.close()
    kernel = await open_kernel(make_settings)
    try:
        user = await users.get_or_create_user(kernel, UID)
        assert user["usageInfo"]["spendRemaining"] == pytest.approx(100.0 - 3 * 0.5)
        assert len(await users.usage_history(kernel, UID, limit=100)) == 3
    finally:
        await kernel.close()


async def test_a_live_process_journal_is_left_alone(make_settings: Callable[..., Any], tmp_path: Path) -> None:
    first = await open_kernel(make_settings)
    try:
        assert users.charge_later(first, UID, 0.25, None)
        live = journals(tmp_path / "data")
        assert len(live) == 1
        second = await open_kernel(make_settings)  # same data dir: must not replay the live kernel's charge
        try:
            assert live[0].exists()  # a replay would have taken the file (it removes what it replays)
            assert len(journals(tmp_path / "data")) == 2  # the second kernel has its own
            await users.caught_up(first, UID)
            user = await users.get_or_create_user(second, UID)
            assert user["usageInfo"]["spendRemaining"] == pytest.approx(99.75)
        finally:
            await second.close()
    finally:
        await first.close()


def test_a_torn_last_line_and_done_marks_are_read_as_a_journal_should_be() -> None:
    lines = [json.dumps({"c": UID, "e": {"_id": f"x{i}", "responseCost": 1.0}}) for i in range(3)]
    lines.append(json.dumps({"d": ["x0"]}))
    text = "\n".join(lines) + '\n{"c": "dev_stub:alice", "e": {"_id": "x9"'  # killed mid-write
    assert [entry["_id"] for _, entry in charge_journal.pending_in(text)] == ["x1", "x2"]


async def test_without_a_durable_store_charges_are_stored_before_the_answer(make_settings: Callable[..., Any]) -> None:
    kernel = Kernel(make_settings(GOFANNON_STORAGE="memory", GOFANNON_SANDBOX_POOL_SIZE="0"), role="cli")
    await kernel.open()
    try:
        assert charge_journal.journal_of(kernel) is None
        assert users.charge_later(kernel, UID, 1.0, None) is False
    finally:
        await kernel.close()


async def test_v1_answers_show_in_the_callers_usage_right_away(serve: Any, fake_llm: FakeLLMServer,
                                                              tmp_path: Path) -> None:
    gw = await start_gateway(serve, fake_llm, tmp_path, GOFANNON_STORAGE="sqlite")
    sdk = gw.sdk()
    for i in range(4):
        assert await ask(sdk, stream=bool(i % 2))
        # asked at once, on the same process: the charge is there
        assert len((await gw.user())["usageInfo"]["usage"]) == i + 1
        assert len(await gw.usage()) == i + 1
    assert [p for p in journals(tmp_path / "data") if p.stat().st_size > 0]  # the calls went through the journal


async def test_a_busy_journal_moves_to_new_files_and_removes_the_stored_ones(
        make_settings: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(charge_journal, "ROTATE_BYTES", 1500)  # a few charges per file
    kernel = await open_kernel(make_settings)
    try:
        for i in range(40):  # always some charge in flight: the file never falls idle
            assert users.charge_later(kernel, UID, 0.5, {"i": i})
        assert len(journals(tmp_path / "data")) > 1
        await users.caught_up(kernel, UID)
        assert len(journals(tmp_path / "data")) == 1  # only the file taking appends is left
        user = await users.get_or_create_user(kernel, UID)
        assert user["usageInfo"]["spendRemaining"] == pytest.approx(100.0 - 40 * 0.5)
    finally:
        await kernel.close()
    assert journals(tmp_path / "data") == []


async def test_back_to_back_journaled_charges_share_a_write_and_a_reader_never_waits_for_the_gathering(
        serve: Any, fake_llm: FakeLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Journaled charges wait ``GATHER_S`` for company before they are written; reading one's usage ends the wait.
    With the wait stretched to a minute, ten quick calls make one write, and the reader sees all ten at once."""
    monkeypatch.setattr(users, "GATHER_S", 60.0)
    gw = await start_gateway(serve, fake_llm, tmp_path, GOFANNON_STORAGE="sqlite")
    sdk = gw.sdk()
    kernel = gw.client.server.app[KERNEL]
    async with gw.client.get("/auth/me") as r:
        uid = (await r.json())["uid"]
    await gw.user()  # the user document exists
    rev_before = (await kernel.store.get("users", uid))["_rev"]
    for _ in range(10):
        assert await ask(sdk, stream=False)
    assert (await kernel.store.get("users", uid))["_rev"] == rev_before  # all ten still gathering
    started = time.monotonic()
    assert len(await gw.usage()) == 10  # the read ends the wait: the ten are written now, in one write
    assert time.monotonic() - started < 10
    revs = int((await kernel.store.get("users", uid))["_rev"].split("-")[0]) - int(rev_before.split("-")[0])
    assert revs == 1


async def test_the_allowance_gate_counts_charges_taken_but_not_yet_stored(
        serve: Any, fake_llm: FakeLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While journaled charges gather (nothing stored yet), the gate of their process already counts them: with
    $1.05 left and calls refused at $1 or less (``MIN_SPEND``), three calls of $0.02 pass, not an unbounded number."""
    monkeypatch.setattr(users, "GATHER_S", 60.0)
    gw = await start_gateway(serve, fake_llm, tmp_path, GOFANNON_STORAGE="sqlite")
    async with gw.client.put("/users/me/spend-remaining", json={"spendRemaining": 1.05}) as r:
        assert r.status == 200, await r.text()
    sdk = gw.sdk()
    answered = 0
    with pytest.raises(openai.RateLimitError) as err:
        for _ in range(6):  # each $0.02 (10 tokens in at $0.001, 5 out at $0.002)
            await sdk.chat.completions.create(model="fake/chat-1", messages=[{"role": "user", "content": "hi"}])
            answered += 1
    assert answered == 3 and err.value.code == "insufficient_quota"
    assert (await gw.user())["usageInfo"]["spendRemaining"] == pytest.approx(0.99)  # the three, stored once read


async def test_a_round_the_store_refuses_is_the_awaiting_takers_error_and_stays_in_the_journal(
        make_settings: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    kernel = await open_kernel(make_settings)
    try:
        await users.get_or_create_user(kernel, UID)
        real = users.store_charges
        failing = True

        async def flaky(*args: Any, **kw: Any) -> Any:
            if failing:
                raise OSError("disk on fire")
            return await real(*args, **kw)

        monkeypatch.setattr(users, "store_charges", flaky)
        assert users.charge_later(kernel, UID, 0.5, {"i": 1})  # journaled: nobody awaits it
        with pytest.raises(OSError, match="disk on fire"):
            await users.charge(kernel, UID, 0.25, {"i": 2})  # awaited, in the same round: its taker hears it
        assert "stays in the journal" in caplog.text
        failing = False
        await users.charge(kernel, UID, 0.125, {"i": 3})  # the store is back: later charges go through
        user = await users.get_or_create_user(kernel, UID)
        assert user["usageInfo"]["spendRemaining"] == pytest.approx(100.0 - 0.125)
        assert [json.loads(line).get("c") for p in journals(tmp_path / "data")
                for line in p.read_text().splitlines()].count(UID) == 1  # the failed journaled one, kept
    finally:
        await kernel.close()
    assert journals(tmp_path / "data")  # left for the next start to replay


async def test_a_user_calling_continuously_has_charges_written_once_per_burst_window(
        make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone journaled charge is written after ``GATHER_S``; once a user's round was written, the next waits until
    ``BURST_S`` after it (one write per window for a script calling back to back), unless somebody reads the usage
    (then at once) or the kernel closes (then at once, and nothing is lost)."""
    monkeypatch.setattr(users, "GATHER_S", 0.01)
    monkeypatch.setattr(users, "BURST_S", 60.0)
    kernel = await open_kernel(make_settings)
    closed = False
    try:
        await users.get_or_create_user(kernel, UID)

        async def rev() -> int:
            return int((await kernel.store.get("users", UID))["_rev"].split("-")[0])

        start = await rev()
        assert users.charge_later(kernel, UID, 0.5, {"i": 1})
        for _ in range(200):  # the first round: written after GATHER_S
            if await rev() > start:
                break
            await asyncio.sleep(0.01)
        assert await rev() == start + 1
        for i in range(5):
            assert users.charge_later(kernel, UID, 0.5, {"i": 2 + i})
        await asyncio.sleep(0.3)
        assert await rev() == start + 1  # the next five wait for the window (60 s here)
        began = time.monotonic()
        assert len(await users.usage_history(kernel, UID, limit=100)) == 6  # a reader: written now, in one write
        assert time.monotonic() - began < 5 and await rev() == start + 2
        assert users.charge_later(kernel, UID, 0.25, {"i": 7})
        began = time.monotonic()
        await kernel.close()  # closing: written at once, not after the window
        closed = True
        assert time.monotonic() - began < 5
    finally:
        if not closed:
            await kernel.close()
    again = await open_kernel(make_settings)
    try:
        assert len(await users.usage_history(again, UID, limit=100)) == 7
        assert (await users.get_or_create_user(again, UID))["usageInfo"]["spendRemaining"] == pytest.approx(100 - 3.25)
    finally:
        await again.close()
