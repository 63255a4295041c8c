"""The arq worker: serves one separation job end to end, talking to the Bot API directly.

A job: download the song through ``getFile``, probe it (duration limit), decode it,
separate it in a thread while the status message shows progress, encode the tracks, upload
them (an album for 2-10 tracks), send the rating message, and mark the status done. The
worker needs only Redis and the bot token: it never opens SQLite; the bot learns the
outcome from arq's job result.

Failure policy:
- bad input and limits raise :class:`bot.jobs.JobFailed` (the user reads its message in
  the status; arq does not retry it);
- transient Telegram and Redis errors raise arq's ``Retry`` with capped exponential backoff,
  until the last try, which fails with a "try again later" message;
- a per-job deadline scaled to the song's duration stops runaway jobs (arq's own timeout is
  one number per function, so it is set to the longest song's deadline plus a margin).

Every send goes through :class:`bot.delivery.DeliveryLedger`, so a re-run does not deliver
twice; the separation cache means a re-run does not repeat model passes either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from arq import Retry
from arq.connections import RedisSettings
from arq.worker import Worker, func
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from telegram import Bot
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.request import HTTPXRequest

from bot import texts
from bot.delivery import (
    AUDIO_SECONDS,
    DONE,
    STARTED_AT,
    DeliveryLedger,
    deliver_tracks,
    delivered_all,
    ledger_key,
    send_rating,
)
from bot.jobs import SEPARATE_JOB, JobFailed, JobOutcome, SeparationJob
from bot.progress import (
    EditThrottle,
    ProgressFeed,
    StatusMessage,
    report_progress,
    retry_after_s,
)
from demix.logs import configure_logging
from demix.settings import Settings
from separation import (
    Audio,
    EnsembleSeparator,
    InvalidAudioError,
    ModelUnavailableError,
    UnknownStemError,
    decode_audio,
    encode_tracks,
    plan_tracks,
    probe_audio,
)

logger = logging.getLogger(__name__)

STATE_KEY = "demix_worker"
MB = 1024 * 1024
# Time left after a job's own deadline for the failure status edit, before arq's timeout.
FINISH_MARGIN_S = 10.0
# How long a cancelled job waits for the separation thread to stop at its next chunk.
CANCEL_GRACE_S = 5.0
WORKER_HEALTH_CHECK_INTERVAL_S = 60


@dataclass
class WorkerState:
    """What every job of one worker process shares (built once, in arq's on_startup)."""

    settings: Settings
    bot: Bot
    separator: EnsembleSeparator
    throttle: EditThrottle


def job_deadline_s(settings: Settings, duration_s: float) -> float:
    """A job's time budget for a song of ``duration_s`` seconds."""
    return settings.job_timeout_base_s + settings.job_timeout_per_audio_s * duration_s


def arq_job_timeout_s(settings: Settings) -> float:
    """arq's timeout for the function: the longest allowed song's deadline, plus a margin."""
    return job_deadline_s(settings, settings.max_duration_s) + FINISH_MARGIN_S


def retry_delay_s(settings: Settings, job_try: int, at_least: float = 0.0) -> float:
    """Capped exponential backoff before try ``job_try + 1``."""
    delay = settings.retry_backoff_s * 2 ** max(0, job_try - 1)
    return max(at_least, min(settings.retry_backoff_max_s, delay))


def is_transient(exc: BaseException) -> bool:
    """Errors worth another try: Telegram flood control, network, 5xx; Redis unreachable."""
    if isinstance(exc, RetryAfter):
        return True
    if isinstance(exc, NetworkError):
        # BadRequest subclasses NetworkError in PTB, but a 400 will not go away; nor will a
        # 413 (an upload over the Bot API's size limit), which PTB reports as NetworkError.
        return not isinstance(exc, BadRequest) and not _is_too_large(exc)
    return isinstance(exc, RedisConnectionError | RedisTimeoutError)


def _is_too_large(exc: NetworkError) -> bool:
    return "(413)" in exc.message or "entity too large" in exc.message.lower()


def make_bot(settings: Settings) -> Bot:
    """A Bot API client from the settings; uploads get generous write timeouts."""
    request = HTTPXRequest(
        connection_pool_size=8,
        connect_timeout=10.0,
        read_timeout=60.0,
        write_timeout=60.0,
        media_write_timeout=300.0,
    )
    return Bot(
        settings.require_token(),
        base_url=settings.telegram_api_base_url,
        base_file_url=settings.telegram_file_base_url,
        local_mode=settings.telegram_local_mode,
        request=request,
        get_updates_request=HTTPXRequest(connection_pool_size=1),
    )


def _config_separator(settings: Settings) -> EnsembleSeparator:
    from demix.wiring import separator_config

    return EnsembleSeparator(separator_config(settings))


def _startup(
    settings: Settings, separator: EnsembleSeparator | None
) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def on_startup(ctx: dict[str, Any]) -> None:
        bot = make_bot(settings)
        try:
            await bot.initialize()
        except InvalidToken:
            # PTB's message quotes the token; say it without.
            raise SystemExit("TELEGRAM_BOT_TOKEN was rejected by the Bot API") from None
        except NetworkError as exc:
            # Jobs retry on their own; a worker can start while Telegram is unreachable.
            logger.warning("Bot API not reachable at startup: %s", exc)
        model = separator or _config_separator(settings)
        started = time.monotonic()
        try:
            # Loading here, not in the first job, keeps the first user's wait honest.
            await asyncio.to_thread(model.warm_up)
        except ModelUnavailableError as exc:
            raise SystemExit(f"the separation models are not available: {exc}") from None
        logger.info("worker ready", extra={"models_load_s": round(time.monotonic() - started, 2)})
        ctx[STATE_KEY] = WorkerState(
            settings, bot, model, EditThrottle(settings.progress_edit_interval_s)
        )

    return on_startup


async def _shutdown(ctx: dict[str, Any]) -> None:
    state: WorkerState | None = ctx.get(STATE_KEY)
    if state is not None:
        with contextlib.suppress(Exception):
            await state.bot.shutdown()


def worker_settings(
    settings: Settings,
    *,
    separator: EnsembleSeparator | None = None,
    burst: bool = False,
    handle_signals: bool = True,
    poll_delay_s: float = 0.5,
) -> dict[str, Any]:
    """Keyword arguments for ``arq.worker.Worker``: the separation function and its policy.

    ``separator`` lets a caller that runs workers in-process (tests) share already-loaded
    models; without it the worker builds one from the settings at startup.
    """
    timeout_s = arq_job_timeout_s(settings)
    return {
        "functions": [
            func(
                separate_job,
                name=SEPARATE_JOB,
                timeout=timeout_s,
                max_tries=settings.job_max_tries,
                keep_result=settings.job_keep_result_s,
            )
        ],
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": _startup(settings, separator),
        "on_shutdown": _shutdown,
        "max_jobs": settings.worker_max_jobs,
        "job_timeout": timeout_s,
        "max_tries": settings.job_max_tries,
        "keep_result": settings.job_keep_result_s,
        "allow_abort_jobs": True,
        # The health key outlives its interval by a second: a hung worker shows within a
        # minute (arq's default interval is an hour).
        "health_check_interval": WORKER_HEALTH_CHECK_INTERVAL_S,
        "burst": burst,
        "handle_signals": handle_signals,
        "poll_delay": poll_delay_s,
    }


def run_worker(settings: Settings) -> int:
    """`demix worker`: run an arq worker until SIGINT/SIGTERM."""
    configure_logging(settings.log_level, "worker")
    settings.require_token()
    try:
        Worker(**worker_settings(settings)).run()
    except SystemExit as exc:
        logger.error("worker stopped: %s", exc)
        return 1
    except Exception:
        # Logged (and so redacted) instead of a raw traceback that could quote a Bot API URL.
        logger.exception("worker crashed")
        return 1
    return 0


# --- the job ---------------------------------------------------------------------------


async def separate_job(ctx: dict[str, Any], **payload: Any) -> dict[str, Any]:
    """arq function: serve one :class:`bot.jobs.SeparationJob`; return its JobOutcome."""
    state: WorkerState = ctx[STATE_KEY]
    job = SeparationJob.from_kwargs(payload)
    job_id: str = ctx["job_id"]
    job_try: int = ctx["job_try"]
    extra = {
        "job_id": job_id,
        "user_id": job.user_id,
        "chat_id": job.chat_id,
        "request_id": job.request_id,
    }
    ledger = DeliveryLedger(ctx["redis"], ledger_key(job_id, ctx["enqueue_time"]))
    status = StatusMessage(state.bot, job.chat_id, job.status_message_id, state.throttle, extra)
    logger.info("job started", extra={**extra, "try": job_try, "stems": ",".join(job.stems)})
    try:
        return await _serve(state, job, ledger, status, extra)
    except JobFailed as exc:
        logger.info("job failed: %s", exc.reason, extra=extra)
        await status.show(texts.job_failed(exc.user_message))
        raise
    except Forbidden as exc:
        # The user blocked the bot or left the chat: nothing can reach them; do not retry.
        logger.info("chat unreachable: %s", exc.message, extra=extra)
        raise JobFailed(texts.WORKER_UNDELIVERABLE, "forbidden") from exc
    except Exception as exc:
        if not is_transient(exc):
            logger.exception("job crashed", extra=extra)
            await status.show(texts.JOB_CRASHED)
            raise
        if job_try >= state.settings.job_max_tries:
            logger.warning("transient error on the last try: %r", exc, extra=extra)
            await status.show(texts.job_failed(texts.WORKER_UNAVAILABLE))
            raise JobFailed(texts.WORKER_UNAVAILABLE, "unavailable") from exc
        floor = retry_after_s(exc) if isinstance(exc, RetryAfter) else 0.0
        delay = retry_delay_s(state.settings, job_try, floor)
        logger.warning("transient error, retry in %.1fs: %r", delay, exc, extra=extra)
        raise Retry(defer=delay) from exc


async def _serve(
    state: WorkerState,
    job: SeparationJob,
    ledger: DeliveryLedger,
    status: StatusMessage,
    extra: dict[str, Any],
) -> dict[str, Any]:
    started = time.monotonic()
    try:
        tracks = plan_tracks(job.stems)
    except UnknownStemError as exc:
        raise JobFailed(exc.user_message, "unknown_stems") from exc
    # The first try's start: "done in ..." counts the whole job, retries included.
    started_at = float(await ledger.record_once(STARTED_AT, repr(time.time())))
    sent = await ledger.load()
    timings: dict[str, float] = {}
    if delivered_all(tracks, sent) and AUDIO_SECONDS in sent:
        logger.info("tracks already delivered by an earlier run", extra=extra)
        audio_seconds = float(sent[AUDIO_SECONDS])
    else:
        audio_seconds = await _produce_and_deliver(state, job, ledger, status, sent, timings, extra)
    await send_rating(state.bot, ledger, job, sent, extra)
    done_text = await ledger.record_once(
        DONE, texts.worker_done(time.time() - started_at, len(tracks))
    )
    await status.show(done_text)
    timings["total_s"] = round(time.monotonic() - started, 3)
    logger.info("job done", extra={**extra, **timings})
    return JobOutcome(tracks, audio_seconds, timings).to_result()


async def _produce_and_deliver(
    state: WorkerState,
    job: SeparationJob,
    ledger: DeliveryLedger,
    status: StatusMessage,
    sent: Mapping[str, str],
    timings: dict[str, float],
    extra: dict[str, Any],
) -> float:
    """Download, separate, encode and upload within the job's deadline; return the duration."""
    settings = state.settings
    start = asyncio.get_running_loop().time()
    work_root = settings.data_dir / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    # Until the duration is known, the longest allowed song's budget applies.
    limit = asyncio.timeout(start + job_deadline_s(settings, settings.max_duration_s))
    try:
        async with limit:
            with tempfile.TemporaryDirectory(
                prefix="job-", dir=work_root, ignore_cleanup_errors=True
            ) as tmp:
                await status.show(texts.WORKER_DOWNLOADING)
                mark = time.monotonic()
                song_path = await _download(state.bot, job, Path(tmp) / "input", settings)
                timings["download_s"] = _since(mark)

                audio = await _load_audio(song_path, settings)
                limit.reschedule(start + job_deadline_s(settings, audio.duration_s))
                await ledger.record(AUDIO_SECONDS, repr(round(audio.duration_s, 3)))

                mark = time.monotonic()
                separated = await _separate(state, audio, job.stems, status)
                timings["separate_s"] = _since(mark)

                mark = time.monotonic()
                paths = await asyncio.to_thread(
                    encode_tracks,
                    separated,
                    Path(tmp) / "out",
                    job.song_name,
                    artist=job.artist or audio.info.artist,
                )
                timings["encode_s"] = _since(mark)

                await status.show(texts.WORKER_UPLOADING)
                mark = time.monotonic()
                files = dict(zip(separated, paths, strict=True))
                await _upload(state.bot, ledger, job, files, sent, extra)
                timings["upload_s"] = _since(mark)
                return audio.duration_s
    except TimeoutError as exc:
        if limit.expired():
            raise JobFailed(texts.WORKER_TIMED_OUT, "timeout") from exc
        raise


def _since(mark: float) -> float:
    return round(time.monotonic() - mark, 3)


async def _download(bot: Bot, job: SeparationJob, dest: Path, settings: Settings) -> Path:
    try:
        file = await bot.get_file(job.file_id)
    except BadRequest as exc:
        if "too big" in exc.message.lower():
            raise JobFailed(texts.worker_telegram_too_big(), "telegram_file_too_big") from exc
        raise JobFailed(texts.WORKER_FILE_UNAVAILABLE, "file_unavailable") from exc
    if file.file_size is not None and file.file_size > settings.max_file_mb * MB:
        raise JobFailed(texts.too_big(settings.max_file_mb), "file_too_big")
    # The name is ours, not the user's: validity is decided by decoding the content.
    return await file.download_to_drive(dest)


async def _load_audio(path: Path, settings: Settings) -> Audio:
    try:
        info = await asyncio.to_thread(probe_audio, path)
        # ffprobe's guess from the bitrate (an mp3 without a Xing header) can be far off;
        # then only the decoded length below may refuse the song.
        if info.duration_s > settings.max_duration_s and not info.duration_estimated:
            raise JobFailed(texts.too_long(settings.max_duration_s), "too_long")
        audio = await asyncio.to_thread(decode_audio, path, info)
    except InvalidAudioError as exc:
        raise JobFailed(exc.user_message, "invalid_audio") from exc
    # A container may declare no duration, or a wrong one: the decoded length decides.
    if audio.duration_s > settings.max_duration_s:
        raise JobFailed(texts.too_long(settings.max_duration_s), "too_long")
    return audio


async def _separate(
    state: WorkerState, audio: Audio, stems: Iterable[str], status: StatusMessage
) -> dict[str, np.ndarray]:
    feed = ProgressFeed()
    cancel = threading.Event()
    reporter = asyncio.create_task(report_progress(status, feed, texts.worker_separating))
    work = asyncio.ensure_future(
        asyncio.to_thread(
            state.separator.separate,
            audio,
            list(stems),
            progress=feed,
            should_cancel=cancel.is_set,
        )
    )
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        # Deadline or worker shutdown: stop the thread at its next chunk, and wait for it so
        # the next job does not share the device with an abandoned one.
        cancel.set()
        await asyncio.wait([work], timeout=CANCEL_GRACE_S)
        if work.done():
            if not work.cancelled():
                work.exception()  # retrieved: SeparationCancelled is the expected outcome
            logger.info("separation stopped at a chunk boundary")
        else:
            logger.warning("separation still running %ss after cancellation", CANCEL_GRACE_S)
        raise
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)


async def _upload(
    bot: Bot,
    ledger: DeliveryLedger,
    job: SeparationJob,
    files: Mapping[str, Path],
    sent: Mapping[str, str],
    extra: dict[str, Any],
) -> None:
    try:
        await deliver_tracks(bot, ledger, job, files, sent, extra)
    except Forbidden as exc:
        raise JobFailed(texts.WORKER_UNDELIVERABLE, "forbidden") from exc
    except BadRequest as exc:
        logger.warning("upload refused: %s", exc.message, extra=extra)
        raise JobFailed(texts.WORKER_UNDELIVERABLE, "upload_refused") from exc
    except NetworkError as exc:
        if not _is_too_large(exc):
            raise
        logger.warning("upload too large: %s", exc.message, extra=extra)
        raise JobFailed(texts.WORKER_TRACKS_TOO_BIG, "upload_too_large") from exc
