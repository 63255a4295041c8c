"""`demix up` as an operator runs it: a subprocess with tiny models and the fake Bot API.

The service's children (redis-server, worker, bot) are found through /proc, so the tests
see exactly what an operator's `ps` would: what runs, and that nothing is left behind. Each
child gets a session of its own, so "left behind" is found by a marker variable every
process started under `up` inherits, not by parent, session or process group.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.settings import Settings
from demix.up import child_environment, safe_url, web_environment, worker_environment
from tests.support.fake_bot_api import ChatMessage, FakeBotApi
from tests.support.processes import child_env, demix_process, run_demix
from tests.support.redis_server import RedisServer, free_port
from tests.support.waiting import wait_until

USER = 4242
START_TIMEOUT_S = 120.0  # the worker imports torch; the machine may be busy
MARKER = "TEST_DEMIX_UP_RUN"  # not a setting; every child inherits it


def _children(pid: int) -> dict[int, str]:
    """Direct children of ``pid``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        cmdline = _cmdline(int(entry.name))
        # The command name (2nd field) is in parentheses and may contain spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and cmdline:
            found[int(entry.name)] = cmdline
    return found


def _marked(marker: str) -> dict[int, str]:
    """Live processes (zombies aside) whose environment carries ``MARKER=marker``: pid ->
    command line."""
    wanted = f"{MARKER}={marker}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not _alive(int(entry.name)):
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in environ:
            found[int(entry.name)] = _cmdline(int(entry.name))
    return found


def _records(log: str) -> list[dict[str, object]]:
    """The JSON log records in `up`'s output: its own lines and its children's (after the
    name prefix); redis-server's own lines are not JSON and are left out."""
    records = []
    for line in log.splitlines():
        text = line.split("| ", 1)[1] if line[:6].rstrip() in {"worker", "bot"} else line
        if text.startswith("{"):
            records.append(json.loads(text))
    return records


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _gone(pid: int) -> bool:
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Up:
    """A running `demix up` and its combined output."""

    process: subprocess.Popen[bytes]
    log_path: Path
    marker: str

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = START_TIMEOUT_S) -> None:
        def seen() -> bool:
            if self.process.poll() is not None and text not in self.log:
                raise AssertionError(f"demix up exited ({self.process.returncode}):\n{self.log}")
            return text in self.log

        wait_until(seen, timeout=timeout, interval=0.1, what=f"{text!r} in the output")

    def children(self) -> dict[str, int]:
        """Role -> pid of the children running now."""
        roles = {}
        for pid, cmdline in _children(self.process.pid).items():
            if "redis-server" in cmdline:
                roles["redis"] = pid
            elif cmdline.endswith("demix worker"):
                roles["worker"] = pid
            elif cmdline.endswith("demix bot"):
                roles["bot"] = pid
            elif cmdline.endswith("demix web"):
                roles["web"] = pid
            else:
                roles[cmdline] = pid
        return roles

    def stop(self, sig: signal.Signals, timeout: float = 90.0) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def left_behind(self) -> dict[int, str]:
        """Processes started under `up` (itself included) still running: pid -> command."""
        return _marked(self.marker)


@pytest.fixture
def start_up(
    tmp_path: Path, model_repo: Path, fake_bot_api: FakeBotApi
) -> Iterator[Callable[..., Up]]:
    """Start `demix up` in an empty folder with a bare environment plus ``env``."""
    started: list[Up] = []
    stack = contextlib.ExitStack()

    def start(**env: str) -> Up:
        marker = uuid.uuid4().hex
        environment = child_env(
            fake_bot_api.environment(),
            inherit=False,
            HOME=tmp_path,
            DEMIX_MODEL_REPO=model_repo,
            DEMIX_DEVICE="cpu",
            DEMIX_DATA_DIR=tmp_path / "data",
            DEMIX_DB_PATH=tmp_path / "data" / "demix.sqlite3",
            DEMIX_CACHE_DIR=tmp_path / "data" / "cache",
            DEMIX_PROGRESS_EDIT_INTERVAL_S="0.2",
            **{MARKER: marker},
            **env,
        )
        log_path = tmp_path / f"up-{len(started)}.log"
        process = stack.enter_context(
            demix_process("up", env=environment, cwd=tmp_path, log=log_path)
        )
        up = Up(process, log_path, marker)
        started.append(up)
        return up

    with stack:
        yield start
    # Whatever a failed test left behind (`up` itself was killed on leaving the stack).
    for up in started:
        for pid in up.left_behind():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _picker(api: FakeBotApi, song: ChatMessage) -> ChatMessage | None:
    return next(
        (m for m in api.chat_messages(USER) if m.reply_to == song.message_id and m.has_keyboard),
        None,
    )


def _press(api: FakeBotApi, message: ChatMessage, label: str) -> None:
    query_id = api.press_button(USER, message, message.button(label).callback_data or "")
    wait_until(lambda: api.answer_for(query_id), timeout=30, what=f"an answer to {label}")


def _health(kind: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "demix.health", kind],
        env=child_env(inherit=False, **env),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_up_serves_a_song_end_to_end_and_sigint_stops_every_child(
    start_up: Callable[..., Up], fake_bot_api: FakeBotApi, song: Path, tmp_path: Path
) -> None:
    # Nothing answers at REDIS_URL, so `up` starts its own redis-server.
    up = start_up(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    up.wait_log("service up")
    children = up.children()
    assert set(children) == {"redis", "worker", "bot"}, children

    sent = fake_bot_api.send_audio(USER, song)
    picker = wait_until(lambda: _picker(fake_bot_api, sent), timeout=60, what="the picker")
    _press(fake_bot_api, picker, "vocals")
    _press(fake_bot_api, picker, "Separate")
    wait_until(
        lambda: len(fake_bot_api.audio_messages(USER)) >= 2,
        timeout=START_TIMEOUT_S,
        interval=0.2,
        what="the separated tracks",
    )
    tracks = fake_bot_api.audio_messages(USER)
    assert sorted(t.file_name or "" for t in tracks) == [
        "Test Song - no_vocals.mp3",
        "Test Song - vocals.mp3",
    ]
    rating = wait_until(
        lambda: next(
            (m for m in fake_bot_api.chat_messages(USER) if any("👍" in b.text for b in m.buttons)),
            None,
        ),
        timeout=30,
        what="the rating buttons",
    )
    _press(fake_bot_api, rating, "👍")

    # Output of every child is forwarded with its name; job lines carry job and user ids.
    log = up.log
    assert "redis | " in log and "worker| " in log and "bot   | " in log
    records = _records(log)
    job_records = [r for r in records if "sep:1:vocals" in json.dumps(r)]
    assert len(job_records) >= 5
    assert all(r.get("job_id") == "sep:1:vocals" for r in job_records)
    assert all(r.get("user_id") == 4242 for r in job_records if not r["logger"].startswith("arq"))
    assert fake_bot_api.token not in log

    # The containers' health checks, against this running service.
    redis_url = next(r["redis_url"] for r in records if "redis_url" in r)
    assert _health("worker", REDIS_URL=redis_url).returncode == 0
    assert _health("bot", **fake_bot_api.environment()).returncode == 0

    assert up.stop(signal.SIGINT) == 0
    data = tmp_path / "data"
    for role, pid in children.items():
        assert not _alive(pid), f"{role} (pid {pid}) outlived demix up"
    assert not up.left_behind()
    assert "SIGINT received" in up.log
    # Worker first (it may be finishing a job), then the bot, then Redis.
    messages = [r["msg"] for r in _records(up.log)]
    stops = [messages.index(f"stopping {name}") for name in ("worker", "bot", "redis")]
    assert stops == sorted(stops)
    # The bot recorded the request, the job and the vote in its SQLite file.
    env = child_env(inherit=False, DEMIX_DB_PATH=data / "demix.sqlite3")
    stats = run_demix("stats", "--json", env=env, cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    figures = json.loads(stats.stdout)
    assert figures["requests"] == 1
    assert (figures["feedback"]["up"], figures["feedback"]["down"]) == (1, 0)
    # Redis persisted its data as an append-only file under the data dir.
    assert list((data / "redis").glob("appendonlydir/*.aof"))


@pytest.mark.slow
def test_up_reuses_a_redis_that_answers(start_up: Callable[..., Up], redis_url: str) -> None:
    up = start_up(REDIS_URL=redis_url)
    up.wait_log("service up")
    children = up.children()
    assert set(children) == {"worker", "bot"}, children
    # What `left_behind` looks for is there while the service runs: the check can fail.
    assert {up.process.pid, *children.values()} <= set(up.left_behind())
    assert f"using Redis at {redis_url}" in up.log
    # The worker reached the given Redis: arq's health key is there.
    wait_until(lambda: _health("worker", REDIS_URL=redis_url).returncode == 0, timeout=60)

    assert up.stop(signal.SIGTERM) == 0
    for role, pid in children.items():
        assert not _alive(pid), f"{role} (pid {pid}) outlived demix up"
    assert not up.left_behind()


@pytest.mark.slow
def test_a_crashed_child_is_started_again_and_the_others_keep_running(
    start_up: Callable[..., Up], fake_bot_api: FakeBotApi, redis_url: str
) -> None:
    up = start_up(REDIS_URL=redis_url)
    up.wait_log("service up")
    children = up.children()

    os.kill(children["bot"], signal.SIGKILL)

    up.wait_log("bot exited unexpectedly with code -9; starting it again in 1 s")
    wait_until(
        lambda: up.children().get("bot") not in (None, children["bot"]),
        timeout=30,
        what="a new bot process",
    )
    assert up.children()["worker"] == children["worker"], "the worker kept running"
    fake_bot_api.send_text(USER, "/start")
    wait_until(lambda: fake_bot_api.last_message(USER), timeout=60, what="the new bot's reply")
    up.wait_log("worker ready")  # a worker stopped while it imports torch dies of SIGTERM
    assert up.stop(signal.SIGINT) == 0, up.log
    assert not up.left_behind()


@pytest.mark.slow
def test_a_configuration_error_takes_the_service_down(start_up: Callable[..., Up]) -> None:
    up = start_up(TELEGRAM_BOT_TOKEN="999999:WRONG-token-for-this-test")

    assert up.process.wait(timeout=START_TIMEOUT_S) == 1
    assert "a configuration error a restart cannot mend; stopping the service" in up.log
    assert "WRONG-token" not in up.log
    assert not up.left_behind()


@pytest.mark.slow
def test_children_stop_when_up_itself_is_killed(
    start_up: Callable[..., Up], redis_url: str
) -> None:
    up = start_up(REDIS_URL=redis_url)
    up.wait_log("service up")
    children = up.children()
    assert set(children) == {"worker", "bot"}, children

    # SIGKILL gives `up` no chance to clean up: the kernel's parent-death signal does it.
    up.process.kill()
    up.process.wait(timeout=30)

    for role, pid in children.items():
        wait_until(functools.partial(_gone, pid), timeout=60, what=f"{role} to exit")
    wait_until(lambda: not up.left_behind(), timeout=60, what="every process of up to exit")


def test_up_without_a_token_says_so(start_up: Callable[..., Up]) -> None:
    up = start_up(TELEGRAM_BOT_TOKEN="")
    assert up.process.wait(timeout=60) == 2
    assert "TELEGRAM_BOT_TOKEN is not set" in up.log


def test_up_without_redis_and_without_redis_server(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    up = start_up(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", PATH=str(empty))
    assert up.process.wait(timeout=60) == 1
    assert "redis-server is not installed" in up.log
    assert not up.left_behind()


def test_up_refuses_a_redis_that_wants_a_password(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis", password="sekrit").start()
    try:
        up = start_up(REDIS_URL=f"redis://:wrong@127.0.0.1:{server.port}/0")
        assert up.process.wait(timeout=60) == 1
        assert "answers but refuses us" in up.log
        assert ":wrong@" not in up.log  # the password is masked
        assert not up.left_behind()
    finally:
        server.stop()


def test_health_checks_fail_without_a_service(fake_bot_api: FakeBotApi, redis_url: str) -> None:
    assert _health("worker", REDIS_URL=redis_url).returncode == 1
    closed = f"http://127.0.0.1:{free_port()}/bot"
    env = {**fake_bot_api.environment(), "TELEGRAM_API_BASE_URL": closed}
    result = _health("bot", **env)
    assert result.returncode == 1
    assert fake_bot_api.token not in result.stderr


@pytest.mark.usefixtures("bare_environment")
def test_children_build_the_settings_up_was_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DEMIX_MAX_FILE_MB=50\nTELEGRAM_LOCAL_MODE=true\n")
    monkeypatch.setenv("DEMIX_ADMIN_IDS", "7,3")
    monkeypatch.setenv("DEMIX_BLEND_WEIGHTS", '{"drums": 0.5, "vocals": 0.75}')
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "42:secret")
    parent = Settings()

    env = child_environment("redis://127.0.0.1:1234/2")
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    child = Settings()

    assert child.redis_url == "redis://127.0.0.1:1234/2"
    assert child == parent.model_copy(update={"redis_url": child.redis_url})
    assert (child.max_file_mb, child.admin_ids) == (50, frozenset({3, 7}))
    # Their output is a pipe to `up`: they write in the format `up`'s own stderr decided.
    assert child_environment("redis://x", "console")["DEMIX_LOG_FORMAT"] == "console"


def test_the_worker_serves_metrics_on_the_port_after_the_bots() -> None:
    env = {"REDIS_URL": "redis://x", "DEMIX_METRICS_PORT": "9100"}
    assert worker_environment(env, 9100) == {**env, "DEMIX_METRICS_PORT": "9101"}
    off = {"REDIS_URL": "redis://x"}
    assert worker_environment(off, 0) == off


def test_safe_url_hides_the_password() -> None:
    assert safe_url("redis://:s3cret@redis.internal:6380/1") == "redis://:***@redis.internal:6380/1"
    assert safe_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_the_web_server_serves_metrics_two_ports_after_the_bots() -> None:
    env = {"REDIS_URL": "redis://x", "DEMIX_METRICS_PORT": "9100"}
    assert web_environment(env, 9100) == {**env, "DEMIX_METRICS_PORT": "9102"}
    assert web_environment(env, 65534)["DEMIX_METRICS_PORT"] == "0"
    off = {"REDIS_URL": "redis://x"}
    assert web_environment(off, 0) == off


@pytest.mark.slow
def test_up_starts_the_mixers_web_server_when_its_url_is_set(
    start_up: Callable[..., Up], redis_url: str
) -> None:
    port = free_port()
    up = start_up(
        REDIS_URL=redis_url, DEMIX_WEBAPP_URL="https://mix.example.org", DEMIX_WEB_PORT=str(port)
    )
    up.wait_log("service up")
    children = up.children()
    assert set(children) == {"worker", "bot", "web"}, children
    wait_until(
        lambda: _health("web", DEMIX_WEB_PORT=str(port)).returncode == 0,
        timeout=60,
        what="the web server's health check",
    )
    # Stopped once the worker is up too (a worker stopped while it starts exits by signal).
    wait_until(lambda: _health("worker", REDIS_URL=redis_url).returncode == 0, timeout=60)
    assert up.stop(signal.SIGTERM) == 0
    assert '"web server stopped"' in up.log
    for role, pid in children.items():
        assert not _alive(pid), f"{role} (pid {pid}) outlived demix up"
