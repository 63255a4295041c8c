"""One separation job end to end: the arq function and its stages.

A job: download the song through ``getFile``, probe it (duration limit), decode it,
separate it in a thread while the status message shows progress, encode the tracks, upload
them (an album for 2-10 tracks), mark the job delivered for the bot (the user's next pick
is free from then on), show the status done, and send the rating message last: whoever
sees the rating sees the job finished.
:mod:`worker.policy` decides what fails, what retries and when time is up; each run's
outcome and stage times go to :mod:`worker.metrics`.

A worker runs several jobs at once (``worker_max_jobs``), pipelined: only one of them
separates at a time (:attr:`WorkerState.device`, held around the separation alone), while
the others download, decode, encode or upload. A job whose song is ready waits for the
device showing "Waiting for the separator…"; its deadline stops while it waits.

From the moment it starts, the job is the only writer of its status message. Every send
goes through :class:`worker.delivery.DeliveryLedger`, so a re-run does not deliver twice;
the separation cache means a re-run does not repeat model passes either.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arq import Retry
from redis.exceptions import RedisError
from telegram import Bot
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter

from common.i18n import translate
from common.jobs import FailureReason, JobFailed, JobOutcome, SeparationJob
from common.settings import Settings
from common.telegram import MB, retry_after_s, upload_limit_bytes
from common.texts import JOB_CRASHED, too_big, too_long
from separation import (
    Audio,
    Ensemble,
    EnsembleSeparator,
    InvalidAudioError,
    NoSoundError,
    RawTrack,
    SongTooLongError,
    UnknownStemError,
    decode_audio,
    plan_tracks,
    probe_audio,
)
from worker import texts
from worker.delivery import (
    AUDIO_SECONDS,
    DONE,
    STARTED_AT,
    DeliveryLedger,
    deliver_tracks,
    delivered_all,
    ledger_key,
    mark_delivered,
    send_rating,
    unconfirmed,
)
from worker.formats import AS_MP3, encode_for_upload, sent_as_mp3
from worker.lease import LeaseKeeper
from worker.metrics import CRASH, WorkerMetrics
from worker.mixes import publish_mix
from worker.policy import (
    is_storage_error,
    is_too_large,
    is_transient,
    job_deadline_s,
    retry_delay_s,
)
from worker.progress import EditThrottle, ProgressFeed, StatusMessage, report_progress

logger = logging.getLogger(__name__)

STATE_KEY = "demix_worker"
# In arq's ctx: the worker's worker.lease.LeaseKeeper, and its call for a stuck device.
LEASES_KEY = "demix_leases"
DEVICE_STUCK_KEY = "demix_device_stuck"
# How long a cancelled job waits for the separation thread to stop at its next chunk.
CANCEL_GRACE_S = 5.0


@dataclass
class WorkerState:
    """What every job of one worker process shares (built once, in arq's on_startup)."""

    settings: Settings
    bot: Bot
    separator: EnsembleSeparator
    throttle: EditThrottle
    metrics: WorkerMetrics
    # The process's one device: one separation at a time, taken in arrival order.
    device: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Jobs past their separation, sending: a stopping worker lets these finish (its grace).
    sending: set[str] = field(default_factory=set)
    # Set once a separation could not be stopped: the device is not to be trusted.
    device_stuck: bool = False


class DeviceStuck(Exception):
    """The separation did not stop when told to; the job goes to another worker."""


@dataclass(frozen=True)
class JobRun:
    """One try of one job: what it serves, what it has sent, where it reports."""

    state: WorkerState
    job: SeparationJob
    ledger: DeliveryLedger
    status: StatusMessage
    extra: dict[str, Any]
    # Whether the job may still send (its lease holds); always True outside a worker.
    may_send: Callable[[], bool] = lambda: True
    on_device_stuck: Callable[[], None] = lambda: None


async def separate_job(ctx: dict[str, Any], **payload: Any) -> dict[str, Any]:
    """arq function: serve one :class:`common.jobs.SeparationJob`; return its JobOutcome."""
    metrics = ctx[STATE_KEY].metrics
    with metrics.running():
        try:
            result = await _run_job(ctx, payload)
        except JobFailed as exc:
            metrics.run_ended("failed", exc.reason.value)
            raise
        except Retry as exc:
            metrics.run_ended("retried", _retry_reason(exc.__cause__))
            raise
        except Exception:
            metrics.run_ended("failed", CRASH)
            raise
    metrics.run_ended("done")
    return result


def _retry_reason(cause: BaseException | None) -> str:
    """What a retry waits out, as a metrics label."""
    if isinstance(cause, RetryAfter):
        return "flood_control"
    if isinstance(cause, RedisError):
        return "redis"
    return "telegram"


async def _run_job(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
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
    lang = job.language
    leases: LeaseKeeper | None = ctx.get(LEASES_KEY)
    run = JobRun(
        state,
        job,
        ledger,
        status,
        extra,
        may_send=(lambda: True) if leases is None else functools.partial(leases.check, job_id),
        on_device_stuck=ctx.get(DEVICE_STUCK_KEY) or (lambda: None),
    )
    try:
        return await _serve(run)
    except DeviceStuck:
        # Handed back at once (the job's try is not its fault): a healthy worker resumes it
        # while this one stops (worker.app.DemixWorker.device_stuck).
        await status.show(translate(texts.HANDED_ON, lang))
        raise Retry(defer=0) from None
    except JobFailed as exc:
        logger.info("job failed: %s", exc.reason, extra=extra)
        await status.show(texts.job_failed(exc.user_message, lang))
        raise
    except Forbidden as exc:
        # The user blocked the bot or left the chat: nothing can reach them; do not retry.
        logger.info("chat unreachable: %s", exc.message, extra=extra)
        raise JobFailed(FailureReason.FORBIDDEN, translate(texts.UNDELIVERABLE, lang)) from exc
    except Exception as exc:
        if is_storage_error(exc):
            # The operator must see this; the user is told to come back, not to change the song.
            logger.error("job stopped, the worker cannot write its files: %s", exc, extra=extra)
            storage = translate(texts.STORAGE, lang)
            await status.show(texts.job_failed(storage, lang))
            raise JobFailed(FailureReason.STORAGE, storage) from exc
        if not is_transient(exc):
            logger.exception("job crashed", extra=extra)
            await status.show(translate(JOB_CRASHED, lang))
            raise
        if job_try >= state.settings.job_max_tries:
            logger.warning("transient error on the last try: %r", exc, extra=extra)
            unavailable = translate(texts.UNAVAILABLE, lang)
            await status.show(texts.job_failed(unavailable, lang))
            raise JobFailed(FailureReason.UNAVAILABLE, unavailable) from exc
        floor = retry_after_s(exc) if isinstance(exc, RetryAfter) else 0.0
        delay = retry_delay_s(state.settings, job_try, floor)
        logger.warning("transient error, retry in %.1fs: %r", delay, exc, extra=extra)
        raise Retry(defer=delay) from exc
    finally:
        state.sending.discard(job_id)


async def _serve(run: JobRun) -> dict[str, Any]:
    job, ledger, extra = run.job, run.ledger, run.extra
    started = time.monotonic()
    try:
        tracks = plan_tracks(job.stems)
    except UnknownStemError as exc:
        message = translate(texts.UNKNOWN_STEMS, job.language)
        raise JobFailed(FailureReason.UNKNOWN_STEMS, message) from exc
    # The first try's start: "done in ..." counts the whole job, retries included.
    now = repr(time.time())
    started_at_text = await ledger.record_once(STARTED_AT, now)
    started_at = float(started_at_text)
    if started_at_text != now:
        # An earlier run of this job began (a worker died, stopped or lost its lease).
        logger.info("job resumed", extra=extra)
        run.state.metrics.job_resumed()
        run.status.footer = translate(texts.RESUMED, job.language)
    sent = await ledger.load()
    timings: dict[str, float] = {}
    if delivered_all(tracks, sent) and AUDIO_SECONDS in sent:
        logger.info("tracks already delivered by an earlier run", extra=extra)
        audio_seconds = float(sent[AUDIO_SECONDS])
    else:
        audio_seconds = await _produce_and_deliver(run, sent, timings)
    await mark_delivered(ledger.redis, job.job_id, run.state.settings.job_keep_result_s)
    recorded = await ledger.load()
    done = texts.done(
        time.time() - started_at,
        len(tracks),
        unconfirmed=unconfirmed(recorded),
        as_mp3=sent_as_mp3(recorded),
        upload_limit_mb=upload_limit_bytes(run.state.settings.telegram_local_mode) / MB,
        lang=job.language,
    )
    done_text = await ledger.record_once(DONE, done)
    await run.status.show(done_text)
    _may_send(run)
    # The mixer's record is in Redis before its button is in the chat (issue 18).
    mix = await publish_mix(
        ledger.redis, run.state.settings, job, ledger.key, tracks, recorded, audio_seconds
    )
    mix_url = None if mix is None else mix[1]
    await send_rating(run.state.bot, ledger, job, sent, extra, mix_url=mix_url)
    timings["total_s"] = round(time.monotonic() - started, 3)
    run.state.metrics.job_done(timings["total_s"])
    logger.info("job done", extra={**extra, **timings})
    mix_dict = None if mix is None else mix[0].to_dict()
    return JobOutcome(tracks, audio_seconds, timings, mix=mix_dict).to_result()


async def _produce_and_deliver(
    run: JobRun, sent: Mapping[str, str], timings: dict[str, float]
) -> float:
    """Download, separate, encode and upload within the job's deadline; return the duration."""
    job, status, settings = run.job, run.status, run.state.settings
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
                await status.show(translate(texts.DOWNLOADING, job.language))
                mark = time.monotonic()
                song_path = await _download(run.state.bot, job, Path(tmp) / "input", settings)
                timings["download_s"] = _since(mark)

                mark = time.monotonic()
                # Decoded to disk: a long song's samples need not be in memory.
                audio = await _load_audio(song_path, settings, job.language, Path(tmp))
                timings["decode_s"] = _since(mark)
                limit.reschedule(start + job_deadline_s(settings, audio.duration_s))
                await run.ledger.record(AUDIO_SECONDS, repr(round(audio.duration_s, 3)))

                mark = time.monotonic()
                async with _device_turn(run, limit):
                    timings["device_wait_s"] = _since(mark)
                    mark = time.monotonic()
                    separated = await _separate(run, audio, Path(tmp) / "raw")
                timings["separate_s"] = _since(mark)

                mark = time.monotonic()
                encoded = await asyncio.to_thread(
                    encode_for_upload,
                    separated,
                    Path(tmp) / "out",
                    job.song_name,
                    artist=job.artist or audio.info.artist,
                    output_format=job.output_format,
                    limit_bytes=upload_limit_bytes(settings.telegram_local_mode),
                )
                timings["encode_s"] = _since(mark)
                # The raw tracks are encoded: their disk is free for the other jobs now.
                shutil.rmtree(Path(tmp) / "raw", ignore_errors=True)
                if encoded.as_mp3:
                    await run.ledger.record(AS_MP3, ",".join(encoded.as_mp3))

                await status.show(translate(texts.UPLOADING, job.language))
                mark = time.monotonic()
                await _upload(run, encoded.files, sent)
                timings["upload_s"] = _since(mark)
                run.state.metrics.delivered(audio.duration_s)
                return audio.duration_s
    except TimeoutError as exc:
        if run.state.device_stuck:
            raise DeviceStuck from exc
        if limit.expired():
            message = translate(texts.TIMED_OUT, job.language)
            raise JobFailed(FailureReason.TIMEOUT, message) from exc
        raise
    finally:
        # The stages that finished, whether or not a later one failed.
        run.state.metrics.stages_timed(timings)


def _since(mark: float) -> float:
    return round(time.monotonic() - mark, 3)


async def _download(bot: Bot, job: SeparationJob, dest: Path, settings: Settings) -> Path:
    lang = job.language
    try:
        file = await bot.get_file(job.file_id)
    except BadRequest as exc:
        if "too big" in exc.message.lower():
            message = texts.telegram_too_big(lang=lang)
            raise JobFailed(FailureReason.TELEGRAM_FILE_TOO_BIG, message) from exc
        message = translate(texts.FILE_UNAVAILABLE, lang)
        raise JobFailed(FailureReason.FILE_UNAVAILABLE, message) from exc
    if file.file_size is not None and file.file_size > settings.max_file_mb * MB:
        raise JobFailed(FailureReason.FILE_TOO_BIG, too_big(settings.max_file_mb, lang))
    # The name is ours, not the user's: validity is decided by decoding the content.
    return await file.download_to_drive(dest)


async def _load_audio(path: Path, settings: Settings, lang: str, spool_dir: Path) -> Audio:
    try:
        info = await asyncio.to_thread(probe_audio, path)
        # ffprobe's guess from the bitrate (an mp3 without a Xing header) can be far off;
        # then only the decoded length below may refuse the song.
        if info.duration_s > settings.max_duration_s and not info.duration_estimated:
            raise JobFailed(FailureReason.TOO_LONG, too_long(settings.max_duration_s, lang))
        # A container may declare no duration, or a wrong one: decoding stops at the limit.
        return await asyncio.to_thread(
            decode_audio, path, info, max_duration_s=settings.max_duration_s, spool_dir=spool_dir
        )
    except SongTooLongError as exc:
        message = too_long(settings.max_duration_s, lang)
        raise JobFailed(FailureReason.TOO_LONG, message) from exc
    except InvalidAudioError as exc:
        no_sound = isinstance(exc, NoSoundError)
        message = texts.no_sound(lang) if no_sound else texts.invalid_audio(lang)
        raise JobFailed(FailureReason.INVALID_AUDIO, message) from exc


@contextlib.asynccontextmanager
async def _device_turn(run: JobRun, limit: asyncio.Timeout) -> AsyncIterator[None]:
    """Hold the worker's device for one separation, waiting for it if another job has it.

    The job's deadline stops during the wait: it bounds the job's own work, and the wait is
    bounded by the deadlines of the jobs ahead (see :func:`worker.policy.arq_job_timeout_s`).
    Cancellation (shutdown) ends the wait at once; the job stays queued for a re-run.
    """
    lock = run.state.device
    if lock.locked():
        logger.info("waiting for the separator", extra=run.extra)
        await run.status.show(translate(texts.WAITING_FOR_SEPARATOR, run.job.language))
    loop = asyncio.get_running_loop()
    when = limit.when()
    left = None if when is None else when - loop.time()
    limit.reschedule(None)
    try:
        await lock.acquire()
    finally:
        limit.reschedule(None if left is None else loop.time() + left)
    try:
        yield
    finally:
        lock.release()


async def _separate(run: JobRun, audio: Audio, raw_dir: Path) -> dict[str, RawTrack]:
    feed = ProgressFeed()
    cancel = threading.Event()
    lang = run.job.language
    reporter = asyncio.create_task(
        report_progress(run.status, feed, lambda fraction: texts.separating(fraction, lang))
    )
    work = asyncio.ensure_future(
        asyncio.to_thread(
            # To files: a long song's tracks would not all fit in memory at once.
            run.state.separator.separate_to_files,
            audio,
            list(run.job.stems),
            raw_dir,
            # The experiment's variant the bot assigned; None: this worker's configured one.
            ensemble=None if run.job.ensemble is None else Ensemble.from_dict(run.job.ensemble),
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
            logger.error(
                "separation still running %ss after cancellation: the device is stuck",
                CANCEL_GRACE_S,
                extra=run.extra,
            )
            run.state.device_stuck = True
            run.on_device_stuck()
        raise
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)


def _may_send(run: JobRun) -> None:
    """Stop here (as a cancelled job) unless the job's lease still holds."""
    if not run.may_send():
        raise asyncio.CancelledError


async def _upload(run: JobRun, files: Mapping[str, Path], sent: Mapping[str, str]) -> None:
    extra, lang = run.extra, run.job.language
    # From here on the job only sends: a stopping worker lets it finish (see _run_job).
    run.state.sending.add(run.job.job_id)
    try:
        await deliver_tracks(
            run.state.bot,
            run.ledger,
            run.job,
            files,
            sent,
            extra,
            before_send=functools.partial(_may_send, run),
        )
    except Forbidden as exc:
        raise JobFailed(FailureReason.FORBIDDEN, translate(texts.UNDELIVERABLE, lang)) from exc
    except BadRequest as exc:
        logger.warning("upload refused: %s", exc.message, extra=extra)
        message = translate(texts.UNDELIVERABLE, lang)
        raise JobFailed(FailureReason.UPLOAD_REFUSED, message) from exc
    except NetworkError as exc:
        if not is_too_large(exc):
            raise
        logger.warning("upload too large: %s", exc.message, extra=extra)
        message = texts.tracks_too_big(lang)
        raise JobFailed(FailureReason.UPLOAD_TOO_LARGE, message) from exc
