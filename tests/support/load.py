"""Many users at once through the whole service: the scenario behind ``bench/load.py`` and
``tests/bot/test_load.py`` (one definition, so the benchmark checks what the test checks).

Real parts only: a redis-server, the fake Bot API over HTTP, the bot's PTB Application and
arq workers in this event loop, tiny random models on the real separation path. Each user
sends a short song, picks stems, and all press Separate at nearly the same moment.

What is checked, for each user:

- **Own tracks, once**: the user's chat holds exactly the tracks of their pick (named after
  their song), each once, and no other audio.
- **FIFO**: jobs are taken in the order they were queued. With one slot (one worker running
  one job at a time) the start order is the queue order. With ``slots`` > 1 a job may start
  a few milliseconds before one queued just ahead of it that another slot took first, so a
  job's place in the start order is within ``slots - 1`` of its place in the queue.
- **True positions**: the position a user is shown is the one their status message shows
  when the bot answers the press (the last "Queued: position p" it had by then). The bot
  reads it from the queue at some moment ``s`` after the job is queued (arq's enqueue time)
  and before the answer (the fake's record of answerCallbackQuery); it is true when
  ``p - 1`` is the number of jobs queued ahead that no worker had taken at ``s``. A job
  whose recorded start is at or before the enqueue moment was taken before ``s``, so
  ``p - 1`` can be no more than the jobs ahead that started after the enqueue (a position
  read before the job was queued, when others were still waiting, breaks this). With one
  slot a job can only be taken once the job started just before it has finished, so ``p - 1``
  is at least the jobs ahead that could not have been taken before the answer. With more
  slots only the first bound is checked. Both bounds are exact when no job starts between
  the enqueue and the answer, which is nearly always: the result counts those.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import callback_data as cd
from common.jobs import separation_job_id
from common.settings import Settings
from separation.tracks import plan_tracks
from tests.bot.conftest import picker_for, press, running_bot
from tests.support.audio import make_song
from tests.support.fake_bot_api import ChatMessage, FakeBotApi
from tests.support.redis_server import RedisServer
from tests.support.waiting import async_wait_until
from tests.support.workers import running_worker

if TYPE_CHECKING:
    from bot.queue import JobState, QueueClient
    from separation import EnsembleSeparator

FIRST_USER_ID = 5001
# A spread of picks over both models: one source, two of model A, two of model B, all six.
PICKS: tuple[tuple[str, ...], ...] = (
    ("vocals",),
    ("drums", "bass"),
    ("guitar", "piano"),
    ("drums", "bass", "vocals", "guitar", "piano", "other"),
)
_POSITION = re.compile(r"Queued: position (\d+)")
# Per job, on top of a fixed allowance: tiny models on two shared cores.
SECONDS_PER_JOB = 10.0


@dataclass(frozen=True)
class UserRun:
    """One simulated user's press and what came of it."""

    user_id: int
    job_id: str
    expected: tuple[str, ...]  # file names of the tracks of their pick
    received: tuple[str, ...]  # file names of the audio messages in their chat
    shown_position: int | None  # as the status message showed it when the press was answered
    pressed_at: float
    answered_at: float
    enqueued_at: float
    started_at: float
    finished_at: float
    last_track_at: float

    @property
    def wait_s(self) -> float:
        return self.started_at - self.enqueued_at

    @property
    def total_s(self) -> float:
        return self.last_track_at - self.pressed_at


@dataclass
class LoadResult:
    """The run's users and every correctness problem found (empty when all checks pass)."""

    users: list[UserRun]
    slots: int
    problems: list[str] = field(default_factory=list)
    exact_positions: int = 0  # positions whose bounds met (no job started in the window)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        waits = [user.wait_s for user in self.users]
        totals = [user.total_s for user in self.users]
        return {
            "users": len(self.users),
            "slots": self.slots,
            "wait_p50_s": round(percentile(waits, 50), 2),
            "wait_p95_s": round(percentile(waits, 95), 2),
            "total_p50_s": round(percentile(totals, 50), 2),
            "total_p95_s": round(percentile(totals, 95), 2),
            "own_tracks_once": not any(p.startswith("tracks") for p in self.problems),
            "fifo": not any(p.startswith("order") for p in self.problems),
            "true_positions": not any(p.startswith("position") for p in self.problems),
            "positions_exact": f"{self.exact_positions}/{len(self.users)}",
            "problems": len(self.problems),
        }


def percentile(values: Sequence[float], percent: float) -> float:
    """The ``percent``-th percentile, interpolated between the closest ranks."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(percent) - 1]


async def run_load(
    workdir: Path,
    *,
    users: int,
    model_repo: Path,
    separator: EnsembleSeparator,
    workers: int = 1,
    worker_max_jobs: int = 1,
    song_seconds: float = 2.0,
    picks: Sequence[tuple[str, ...]] = PICKS,
    redis_url: str | None = None,
    api: FakeBotApi | None = None,
    watch_interval_s: float = 0.1,
    seconds_per_job: float = SECONDS_PER_JOB,
) -> LoadResult:
    """Run the scenario; the Redis and fake Bot API are started here unless given.
    ``seconds_per_job`` sizes the wait for every job (long songs, published-size models)."""
    async with contextlib.AsyncExitStack() as stack:
        if redis_url is None:
            server = RedisServer(workdir / "redis").start()
            stack.callback(server.stop)
            redis_url = server.url
        if api is None:
            api = stack.enter_context(FakeBotApi())
        settings = Settings(
            _env_file=None,
            **api.settings_overrides(),
            redis_url=redis_url,
            db_path=workdir / "demix.sqlite3",
            data_dir=workdir / "data",
            cache_dir=workdir / "cache",
            model_repo=model_repo,
            device="cpu",
            worker_max_jobs=worker_max_jobs,
            retry_backoff_s=0.05,
            retry_backoff_max_s=0.2,
            progress_edit_interval_s=0.5,
        )
        songs = [
            make_song(workdir / f"Song {index}.mp3", seconds=song_seconds, seed=index)
            for index in range(users)
        ]
        bot = await stack.enter_async_context(
            running_bot(settings, watch_interval_s=watch_interval_s)
        )
        for _ in range(workers):
            await stack.enter_async_context(running_worker(settings, separator))
        return await _serve_users(
            api, bot.services.queue, songs, picks, workers * worker_max_jobs, seconds_per_job
        )
    raise AssertionError("unreachable")  # pragma: no cover  (mypy: the block always returns)


async def _serve_users(
    api: FakeBotApi,
    queue: QueueClient,
    songs: list[Path],
    stem_sets: Sequence[tuple[str, ...]],
    slots: int,
    seconds_per_job: float = SECONDS_PER_JOB,
) -> LoadResult:
    user_ids = [FIRST_USER_ID + index for index in range(len(songs))]
    picks = {user: stem_sets[index % len(stem_sets)] for index, user in enumerate(user_ids)}
    pickers = await asyncio.gather(
        *(_pick(api, user, song, picks[user]) for user, song in zip(user_ids, songs, strict=True))
    )
    # Everyone presses Separate within a few milliseconds: the bot sees a burst of presses.
    pressed: dict[int, tuple[str, float]] = {}
    for user, picker in zip(user_ids, pickers, strict=True):
        pressed[user] = (
            api.press_button(user, picker, picker.button("Separate").callback_data or ""),
            time.time(),
        )
    answers = await asyncio.gather(
        *(api.async_wait_for_answer(query, timeout=30.0) for query, _ in pressed.values())
    )
    problems = [
        f"press: user {user} was refused: {answer.text}"
        for user, answer in zip(user_ids, answers, strict=True)
        if answer.show_alert
    ]
    request_ids = {
        user: _request_id(picker) for user, picker in zip(user_ids, pickers, strict=True)
    }
    job_ids = {user: separation_job_id(request_ids[user], picks[user]) for user in user_ids}
    expected = {
        user: tuple(f"{song.stem} - {track}.mp3" for track in plan_tracks(picks[user]))
        for user, song in zip(user_ids, songs, strict=True)
    }

    async def all_done() -> dict[str, JobState]:
        states = (await queue.snapshot(list(job_ids.values()))).states
        finished = all(state.state in ("done", "failed") for state in states.values())
        delivered = all(len(api.audio_messages(user)) >= len(expected[user]) for user in user_ids)
        return states if finished and delivered else {}

    states: dict[str, JobState] = await async_wait_until(
        all_done, timeout=30.0 + seconds_per_job * len(songs), interval=0.1, what="every job"
    )
    answered_at = _answer_times(api)
    runs = [
        _user_run(api, user, job_ids[user], expected[user], states[job_ids[user]], pressed[user][1],
                  answered_at[pressed[user][0]], songs[index])
        for index, user in enumerate(user_ids)
    ]  # fmt: skip
    result = LoadResult(runs, slots, problems)
    for run in runs:
        state = states[run.job_id]
        if state.state != "done":
            result.problems.append(f"job: {run.job_id} ended {state.state}: {state.error}")
        if Counter(run.received) != Counter(run.expected):
            result.problems.append(
                f"tracks: user {run.user_id} got {run.received}, expected {run.expected}"
            )
    _check_order(result)
    _check_positions(result)
    return result


async def _pick(api: FakeBotApi, user: int, song: Path, stems: Sequence[str]) -> ChatMessage:
    sent = api.send_audio(user, song)
    picker = await picker_for(api, user, sent)
    for stem in stems:
        answer = await press(api, user, picker, picker.button(stem).callback_data or "")
        assert not answer.show_alert, answer.text
    return picker


def _request_id(picker: ChatMessage) -> int:
    parsed = cd.parse(picker.button("Separate").callback_data)
    assert parsed is not None
    return parsed.request_id


def _answer_times(api: FakeBotApi) -> dict[str, float]:
    return {
        str(call.params.get("callback_query_id")): call.at
        for call in api.calls("answerCallbackQuery")
    }


def _user_run(
    api: FakeBotApi,
    user: int,
    job_id: str,
    expected: tuple[str, ...],
    state: JobState,
    pressed_at: float,
    answered_at: float,
    song: Path,
) -> UserRun:
    tracks = [
        call.at
        for call in api.calls()
        if call.method in ("sendAudio", "sendMediaGroup")
        and call.ok
        and str(call.params.get("chat_id")) == str(user)
    ]
    return UserRun(
        user_id=user,
        job_id=job_id,
        expected=expected,
        received=tuple(m.file_name or "" for m in api.audio_messages(user)),
        shown_position=_shown_position(api, user, answered_at),
        pressed_at=pressed_at,
        answered_at=answered_at,
        enqueued_at=state.enqueued_at or 0.0,
        started_at=state.started_at or 0.0,
        finished_at=state.finished_at or 0.0,
        last_track_at=max(tracks, default=0.0),
    )


def _shown_position(api: FakeBotApi, user: int, moment: float) -> int | None:
    """The last queue position the user's status message showed up to ``moment``."""
    for message in api.chat_messages(user):
        first = message.texts[0] or ""
        if not first.startswith("⏳"):
            continue
        # Each state is shown from the edit that set it (the message's creation for the first).
        set_at = [0.0] + [edit.at for edit in message.history]
        shown = [
            int(match[1])
            for text, since in zip(message.texts, set_at, strict=True)
            if since <= moment and (match := _POSITION.search(text or ""))
        ]
        return shown[-1] if shown else None
    return None


def _check_order(result: LoadResult) -> None:
    # Enqueues within one millisecond share arq's score; Redis then orders them by id (the
    # bot handles different users' presses concurrently, so such ties are common).
    by_enqueue = sorted(result.users, key=lambda run: (run.enqueued_at, run.job_id))
    start_rank = {
        run.job_id: rank
        for rank, run in enumerate(sorted(result.users, key=lambda run: run.started_at))
    }
    for rank, run in enumerate(by_enqueue):
        if abs(start_rank[run.job_id] - rank) > result.slots - 1:
            result.problems.append(
                f"order: {run.job_id} was queued {rank + 1}th and started "
                f"{start_rank[run.job_id] + 1}th with {result.slots} slot(s)"
            )


def _check_positions(result: LoadResult) -> None:
    by_start = sorted(result.users, key=lambda run: run.started_at)
    # The earliest moment a worker could have taken each job: with one slot, not before the
    # job it ran just before had finished.
    earliest_take = {
        run.job_id: max(run.enqueued_at, by_start[rank - 1].finished_at)
        if result.slots == 1 and rank > 0
        else run.enqueued_at
        for rank, run in enumerate(by_start)
    }
    for run in result.users:
        # Enqueues within one millisecond share arq's score; Redis then orders them by id.
        ahead = [
            other
            for other in result.users
            if (other.enqueued_at, other.job_id) < (run.enqueued_at, run.job_id)
        ]
        most = 1 + sum(other.started_at > run.enqueued_at for other in ahead)
        least = 1 + sum(earliest_take[other.job_id] > run.answered_at for other in ahead)
        if result.slots > 1:
            least = 1
        shown = run.shown_position
        if shown is None or not least <= shown <= most:
            result.problems.append(
                f"position: {run.job_id} showed {shown}, true was in [{least}, {most}]"
            )
        elif least == most:
            result.exact_positions += 1
