"""The Prometheus endpoints of the bot and the worker, scraped over HTTP while real parts run:
the bot polling the fake Bot API, arq's worker with tiny models, a real Redis."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from common.metrics import new_registry, serve_metrics
from common.rating import RATING_PROMPT
from common.settings import Settings
from separation import EnsembleSeparator
from tests.bot.conftest import press, running_bot
from tests.bot.test_end_to_end import JOB_TIMEOUT_S, pick_and_separate, wait_for_tracks
from tests.support.fake_bot_api import FakeBotApi
from tests.support.redis_server import free_port
from tests.support.waiting import async_wait_until
from tests.support.workers import running_worker

USER = 401
STAGES = ("download", "decode", "separate", "encode", "upload")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    """Every sample of ``http://127.0.0.1:port/metrics``, by name and labels."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def wait_for_value(port: int, name: str, expected: float, **labels: str) -> Samples:
    """Scrape until ``name{labels}`` reads ``expected``; the last scrape."""

    async def reads() -> Samples | None:
        samples = await scrape(port)
        return samples if value(samples, name, **labels) == expected else None

    return await async_wait_until(
        reads, timeout=JOB_TIMEOUT_S, what=f"{name}{labels} == {expected} on :{port}"
    )


async def test_bot_and_worker_endpoints_count_a_job_from_queue_to_vote(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    separator: EnsembleSeparator,
) -> None:
    bot_port, worker_port = free_port(), free_port()
    settings = service_settings(metrics_port=bot_port)
    worker_settings = service_settings(metrics_port=worker_port)
    async with running_bot(settings):
        before = await wait_for_value(bot_port, "demix_queue_reachable", 1)
        assert value(before, "demix_queue_depth") == 0
        assert value(before, "demix_jobs_total", outcome="done", reason="none") == 0
        assert value(before, "demix_votes_total", vote="up") == 0
        assert value(before, "process_resident_memory_bytes"), "the process collector"

        # No worker yet: the job waits, and the bot's watcher sees it in the queue.
        sent = fake_bot_api.send_audio(USER, song)
        await pick_and_separate(fake_bot_api, USER, sent, ["vocals"])
        await wait_for_value(bot_port, "demix_queue_depth", 1)

        async with running_worker(worker_settings, separator):
            await wait_for_tracks(fake_bot_api, USER, 2)
            worker = await wait_for_value(
                worker_port, "demix_worker_job_runs_total", 1, outcome="done", reason="none"
            )
            assert value(worker, "demix_worker_jobs_in_progress") == 0
            assert value(worker, "demix_worker_audio_seconds_total") == pytest.approx(3.0, abs=0.1)
            for stage in STAGES:
                count = value(worker, "demix_worker_stage_seconds_count", stage=stage)
                assert count == 1, stage
                total = value(worker, "demix_worker_stage_seconds_sum", stage=stage)
                assert total is not None and total >= 0, stage
            assert value(worker, "demix_worker_job_seconds_count") == 1
            assert value(worker, "demix_worker_stage_seconds_bucket", stage="separate", le="+Inf")
            assert value(worker, "demix_jobs_total", outcome="done", reason="none") is None, (
                "the worker serves its own registry, not the bot's"
            )

        bot = await wait_for_value(bot_port, "demix_jobs_total", 1, outcome="done", reason="none")
        assert value(bot, "demix_queue_depth") == 0
        assert value(bot, "demix_job_wait_seconds_count") == 1

        # Votes: 👍, 👍 again (no change), then 👎 (a changed vote counts under its new value).
        rating = await async_wait_until(
            lambda: fake_bot_api.last_message(USER, containing=RATING_PROMPT)
        )
        for button in ("👍", "👍", "👎"):
            await press(fake_bot_api, USER, rating, rating.button(button).callback_data or "")
        votes = await scrape(bot_port)
        assert value(votes, "demix_votes_total", vote="up") == 1
        assert value(votes, "demix_votes_total", vote="down") == 1

    with pytest.raises(httpx.ConnectError):
        await scrape(bot_port)  # the endpoint closed with the bot


async def test_a_failed_job_is_counted_with_its_reason_on_both_sides(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    separator: EnsembleSeparator,
) -> None:
    bot_port, worker_port = free_port(), free_port()
    settings = service_settings(metrics_port=bot_port)
    async with (
        running_bot(settings),
        running_worker(service_settings(metrics_port=worker_port), separator),
    ):
        sent = fake_bot_api.send_document(USER, b"ID3 but not really an mp3" * 50, "fake.mp3")
        await pick_and_separate(fake_bot_api, USER, sent, ["vocals"])
        worker = await wait_for_value(
            worker_port, "demix_worker_job_runs_total", 1, outcome="failed", reason="invalid_audio"
        )
        assert value(worker, "demix_worker_job_runs_total", outcome="done", reason="none") == 0
        assert value(worker, "demix_worker_stage_seconds_count", stage="download") == 1
        assert value(worker, "demix_worker_stage_seconds_count", stage="decode") == 0
        assert value(worker, "demix_worker_audio_seconds_total") == 0
        await wait_for_value(
            bot_port, "demix_jobs_total", 1, outcome="failed", reason="invalid_audio"
        )


async def test_a_retried_run_is_counted_with_what_it_waited_out(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    separator: EnsembleSeparator,
) -> None:
    bot_port, worker_port = free_port(), free_port()
    fake_bot_api.fail_next("sendMediaGroup", status=429, retry_after=1)
    async with (
        running_bot(service_settings(metrics_port=bot_port)),
        running_worker(service_settings(metrics_port=worker_port), separator),
    ):
        sent = fake_bot_api.send_audio(USER, song)
        await pick_and_separate(fake_bot_api, USER, sent, ["vocals"])
        await wait_for_tracks(fake_bot_api, USER, 2)
        worker = await wait_for_value(
            worker_port, "demix_worker_job_runs_total", 1, outcome="done", reason="none"
        )
        assert value(
            worker, "demix_worker_job_runs_total", outcome="retried", reason="flood_control"
        )
        # Both runs downloaded and separated; only the second one's upload went out.
        assert value(worker, "demix_worker_stage_seconds_count", stage="download") == 2
        assert value(worker, "demix_worker_stage_seconds_count", stage="separate") == 2
        assert value(worker, "demix_worker_stage_seconds_count", stage="upload") == 1
        assert value(worker, "demix_worker_audio_seconds_total") == pytest.approx(3.0, abs=0.1)
        bot = await wait_for_value(bot_port, "demix_jobs_total", 1, outcome="done", reason="none")
        assert sum(v for (name, _), v in bot.items() if name == "demix_jobs_total") == 1


async def test_the_endpoint_is_off_at_port_0_and_a_busy_port_is_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = new_registry()
    Counter("demix_test_events", "a test counter", registry=registry).inc()
    assert serve_metrics(registry, "127.0.0.1", 0) is None

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="common.metrics"):
            assert serve_metrics(registry, "127.0.0.1", port) is None
        assert "metrics endpoint not started" in caplog.text

    server = serve_metrics(registry, "127.0.0.1", free_port())
    assert server is not None
    try:
        assert value(await scrape(server.port), "demix_test_events_total") == 1
    finally:
        server.close()
