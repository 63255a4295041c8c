"""``demix web``: the mixer's web server (aiohttp): the page, its JSON API, the tracks' audio.

Routes (DESIGN.md, "The mixer"; docs/operations.md, "The mixer"):

- ``GET /healthz``: ``{"ok": true}``.
- ``GET /mix/<id>``: the page (``web/static/mixer.html``, the same for every id).
- ``GET /static/<file>``: the page's files.
- ``GET /api/mixes/<id>``: the mix (song, format, language, duration, tracks with a signed
  audio URL and peaks, or an error saying why a track cannot be had).
- ``GET /api/mixes/<id>/tracks/<track>?k=<token>``: one track's audio as delivered, with
  Range support; authorised by the URL's token (``<audio src>`` sends no headers).
- ``POST /api/mixes/<id>/render``: 202, and the mix is made in the background and sent.

Every ``/api/`` call but the track audio needs ``Authorization: tma <initData>``
(:mod:`web.auth`): missing, forged or expired 401, another user's mix 403, an id that is not
one (pattern) or unknown 404. Errors are JSON ``{"error": "..."}``, never a traceback:
:func:`errors` turns every exception into one and logs it. Every response carries the CSP
and the other security headers (:data:`SECURITY_HEADERS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from redis.asyncio import Redis
from telegram import Bot
from telegram.error import InvalidToken, NetworkError
from telegram.ext import ExtBot

from common.exits import EXIT_CONFIG
from common.flood_control import PerChatFloodControl
from common.i18n import language_for, translate
from common.logs import configure_logging
from common.metrics import serve_metrics
from common.mixes import TRACK_NAME_PATTERN, MixRecord, is_mix_id
from common.settings import Settings
from common.telegram import MB, upload_limit_bytes, uploading_request
from separation.naming import safe_tag, track_file_name, track_title
from storage import Database
from web import texts
from web.auth import AuthError, WebAppUser, track_token, track_token_valid, validate_init_data
from web.metrics import BUSY, FAILED, SENT, WebMetrics
from web.render import BadParams, MixParams, render_mix
from web.render import parse_params as parse_render_params
from web.store import MixStore
from web.tracks import TrackCache, TrackUnavailable, content_type

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")
PAGE = "mixer.html"
# A render request is a few hundred bytes; nothing the API takes is near this.
MAX_BODY_BYTES = 16 * 1024
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors https://web.telegram.org https://*.telegram.org; "
    "base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}

SERVICES: web.AppKey[WebServices] = web.AppKey("services")


@dataclass
class WebServices:
    """What every request of one web process shares."""

    settings: Settings
    bot: Bot
    store: MixStore
    cache: TrackCache
    metrics: WebMetrics
    token: str
    renders: asyncio.Semaphore
    work_dir: Path
    rendering: set[int] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class ApiError(Exception):
    """An API answer other than 2xx, with its message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


def make_bot(settings: Settings) -> Bot:
    """The web process's Bot API client: getFile and downloads, sendAudio of the mixes; a
    429 is waited out for its chat alone and the call made again (the bot's flood control:
    another user's mix is not held up)."""
    return ExtBot(
        settings.require_token(),
        base_url=settings.telegram_api_base_url,
        base_file_url=settings.telegram_file_base_url,
        local_mode=settings.telegram_local_mode,
        request=uploading_request(settings),
        rate_limiter=PerChatFloodControl(),
    )


# Responses: headers on all of them, JSON errors


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/api/") and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure as JSON ``{"error": ...}`` with its status; unexpected ones logged."""
    metrics = request.app[SERVICES].metrics
    try:
        return await handler(request)
    except ApiError as exc:
        metrics.api_refused(exc.status)
        return _json_error(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        metrics.api_refused(exc.status)
        if exc.status == 413:
            return _json_error(413, texts.BODY_TOO_LARGE)
        return _json_error(exc.status, exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("request failed", extra={"path": request.path[:200]})
        metrics.api_refused(500)
        return _json_error(500, texts.INTERNAL_ERROR)


# Authentication and the mix a request is about


def _user(request: web.Request) -> WebAppUser:
    services = request.app[SERVICES]
    header = request.headers.get("Authorization", "")
    scheme, _, init_data = header.partition(" ")
    if scheme.lower() != "tma" or not init_data.strip():
        raise ApiError(401, translate(texts.AUTH_FAILED, "en"))
    try:
        return validate_init_data(
            init_data.strip(), services.token, services.settings.webapp_auth_max_age_s
        )
    except AuthError as exc:
        logger.info("init data refused: %s", exc)
        raise ApiError(401, translate(texts.AUTH_FAILED, "en")) from exc


async def _owned_mix(request: web.Request) -> tuple[MixRecord, WebAppUser]:
    """The mix of the URL, for its owner: 404 (not an id, unknown), 401, 403."""
    mix_id = request.match_info["mix_id"]
    if not is_mix_id(mix_id):
        raise ApiError(404, texts.MIX_NOT_FOUND)
    user = _user(request)
    lang = language_for(user.language_code)
    record = await request.app[SERVICES].store.get(mix_id)
    if record is None:
        raise ApiError(404, translate(texts.MIX_NOT_FOUND, lang))
    if record.user_id != user.user_id:
        logger.warning(
            "mix refused to another user", extra={"mix_id": mix_id, "user_id": user.user_id}
        )
        raise ApiError(403, translate(texts.NOT_YOURS, lang))
    return record, user


# Handlers


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def _static_response(name: str) -> web.StreamResponse:
    if not STATIC_NAME.fullmatch(name) or ".." in name:
        raise ApiError(404, "not found")
    path = STATIC_DIR / name
    if not path.is_file():
        raise ApiError(404, "not found")
    headers = {"Content-Type": STATIC_TYPES.get(path.suffix, "application/octet-stream")}
    headers["Cache-Control"] = "no-cache"
    return web.FileResponse(path, headers=headers)


async def page(request: web.Request) -> web.StreamResponse:
    if not is_mix_id(request.match_info["mix_id"]):
        raise ApiError(404, texts.MIX_NOT_FOUND)
    request.app[SERVICES].metrics.page_served()
    return _static_response(PAGE)


async def static(request: web.Request) -> web.StreamResponse:
    return _static_response(request.match_info["name"])


async def _track_entry(
    services: WebServices, record: MixRecord, index: int, now: float
) -> dict[str, Any]:
    track = record.tracks[index]
    entry: dict[str, Any] = {"name": track.name, "url": None, "peaks": None, "error": None}
    try:
        path = await services.cache.fetch(track.file_id)
    except TrackUnavailable as exc:
        services.metrics.track_fetched(exc.reason)
        entry["error"] = texts.track_error(exc.reason, record.language)
        return entry
    try:
        peaks = await services.cache.peaks(track.file_id, path)
    except (RuntimeError, OSError) as exc:
        logger.warning("no peaks for a track: %s", exc, extra={"mix_id": record.mix_id})
        peaks = None
    token = track_token(services.token, record.mix_id, track.name, now)
    entry["url"] = f"/api/mixes/{record.mix_id}/tracks/{track.name}?k={token}"
    if peaks is not None:
        entry["peaks"] = peaks.values
        entry["duration_s"] = peaks.duration_s
    return entry


async def get_mix(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    record, _ = await _owned_mix(request)
    now = time.time()
    entries = await asyncio.gather(
        *(_track_entry(services, record, i, now) for i in range(len(record.tracks)))
    )
    duration = record.duration_s
    if duration is None:
        duration = max((entry.get("duration_s") or 0.0 for entry in entries), default=0.0)
    for entry in entries:
        entry.pop("duration_s", None)
    services.metrics.mix_opened()
    return web.json_response(
        {
            "song": record.song_name,
            "format": record.output_format,
            "language": record.language,
            "duration_s": duration,
            "tracks": entries,
        }
    )


async def track_audio(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    mix_id, name = request.match_info["mix_id"], request.match_info["track"]
    token = request.query.get("k", "")
    if not (is_mix_id(mix_id) and TRACK_NAME_PATTERN.fullmatch(name)):
        raise ApiError(404, texts.MIX_NOT_FOUND)
    if not track_token_valid(services.token, mix_id, name, token):
        raise ApiError(401, texts.AUTH_FAILED)
    record = await services.store.get(mix_id)
    track = None if record is None else record.track(name)
    if track is None:
        raise ApiError(404, texts.MIX_NOT_FOUND)
    try:
        path = await services.cache.fetch(track.file_id)
    except TrackUnavailable as exc:
        raise ApiError(404, texts.track_error(exc.reason, "en")) from exc
    headers = {"Content-Type": content_type(path), "Cache-Control": "private, max-age=3600"}
    return web.FileResponse(path, headers=headers)


async def _read_json(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, texts.BODY_TOO_LARGE)
    # read(n) gives what has arrived (up to n): a body in several packets is read whole.
    body = bytearray()
    while chunk := await request.content.read(MAX_BODY_BYTES + 1 - len(body)):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, texts.BODY_TOO_LARGE)
    if not body.strip():
        return {}

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        return json.loads(bytes(body), parse_constant=refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "the body is not valid JSON") from exc


async def post_render(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    record, user = await _owned_mix(request)
    lang = record.language
    body = await _read_json(request)
    try:
        params = parse_render_params(body, record.track_names)
    except BadParams as exc:
        raise ApiError(400, str(exc)) from exc
    gains = params.gains(record.track_names)
    if not any(gain > 0 for gain in gains.values()):
        raise ApiError(400, translate(texts.NOTHING_TO_MIX, lang))
    if user.user_id in services.rendering:
        services.metrics.render_ended(BUSY)
        raise ApiError(409, translate(texts.RENDER_BUSY, lang))
    services.rendering.add(user.user_id)
    caption = texts.caption(
        record.track_names,
        params.levels_db,
        params.muted,
        params.solo,
        params.tempo,
        params.pitch_semitones,
        0.0,
        lang,
    )
    logger.info(
        "render accepted",
        extra={"mix_id": record.mix_id, "user_id": user.user_id, "mix": caption},
    )
    task = asyncio.create_task(
        _render_and_send(services, record, user.user_id, params, gains), name="demix-render"
    )
    services.tasks.add(task)
    task.add_done_callback(services.tasks.discard)
    return web.json_response({"status": "accepted"}, status=202)


async def _render_and_send(
    services: WebServices,
    record: MixRecord,
    user_id: int,
    params: MixParams,
    gains: dict[str, float],
) -> None:
    """Make the mix and send it to the chat; a failure is told in the chat and counted."""
    extra = {"mix_id": record.mix_id, "user_id": user_id, "job_id": record.job_id}
    started = time.monotonic()
    try:
        async with services.renders:
            await _render_and_send_now(services, record, params, gains, extra)
    except asyncio.CancelledError:
        services.metrics.render_ended(FAILED)
        raise
    except Exception as exc:
        logger.exception("render failed", extra=extra)
        services.metrics.render_ended(FAILED)
        reason = (
            texts.track_error(exc.reason, record.language)
            if isinstance(exc, TrackUnavailable)
            else ""
        )
        text = translate(texts.RENDER_FAILED, record.language)
        try:
            await services.bot.send_message(record.chat_id, f"{text}\n{reason}".strip())
        except Exception as send_exc:  # the chat may be gone: logged
            logger.warning("render failure not told: %s", send_exc, extra=extra)
    else:
        seconds = time.monotonic() - started
        services.metrics.render_ended(SENT, seconds)
        logger.info("mix sent", extra={**extra, "render_s": round(seconds, 3)})
    finally:
        services.rendering.discard(user_id)


async def _render_and_send_now(
    services: WebServices,
    record: MixRecord,
    params: MixParams,
    gains: dict[str, float],
    extra: dict[str, Any],
) -> None:
    wanted = [(track, gains[track.name]) for track in record.tracks if gains[track.name] > 0]
    paths = await asyncio.gather(*(services.cache.fetch(track.file_id) for track, _ in wanted))
    services.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mix-", dir=services.work_dir) as tmp:
        rendered = await render_mix(
            [(path, gain) for path, (_, gain) in zip(paths, wanted, strict=True)],
            Path(tmp),
            record.song_name,
            artist=record.artist,
            fmt=record.output_format,
            tempo=params.tempo,
            pitch_semitones=params.pitch_semitones,
            limit_bytes=upload_limit_bytes(services.settings.telegram_local_mode),
        )
        caption = texts.caption(
            record.track_names,
            params.levels_db,
            params.muted,
            params.solo,
            params.tempo,
            params.pitch_semitones,
            rendered.lowered_db,
            record.language,
        )
        logger.info(
            "mix rendered",
            extra={
                **extra,
                "peak": round(rendered.peak, 4),
                "lowered_db": rendered.lowered_db,
                "mb": round(rendered.path.stat().st_size / MB, 2),
            },
        )
        with rendered.path.open("rb") as audio:
            await services.bot.send_audio(
                record.chat_id,
                audio,
                filename=track_file_name(record.song_name, "mix", rendered.fmt),
                title=track_title(record.song_name, "mix"),
                performer=safe_tag(record.artist),
                caption=caption,
            )


# The application


def create_app(services: WebServices) -> web.Application:
    """The aiohttp application over ``services`` (which the caller opens and closes)."""
    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY_BYTES)
    app[SERVICES] = services
    app.on_response_prepare.append(_security_headers)
    mix = r"{mix_id:[^/]{1,64}}"
    app.router.add_get("/healthz", healthz)
    app.router.add_get(f"/mix/{mix}", page)
    app.router.add_get(r"/static/{name:[^/]{1,100}}", static)
    app.router.add_get(f"/api/mixes/{mix}", get_mix)
    app.router.add_get(f"/api/mixes/{mix}/tracks/{{track:[^/]{{1,40}}}}", track_audio)
    app.router.add_post(f"/api/mixes/{mix}/render", post_render)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    app.on_shutdown.append(_cancel_renders)
    return app


async def _not_found(request: web.Request) -> web.Response:
    raise ApiError(404, "not found")


async def _cancel_renders(app: web.Application) -> None:
    tasks = list(app[SERVICES].tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _open_database(path: Path) -> Database:
    """Open (and migrate) SQLite; the bot may be migrating the same file at this moment."""
    for attempt in range(5):
        try:
            return await Database.open(path)
        except Exception as exc:  # a concurrent migration: retried
            if attempt == 4:
                raise
            logger.info("database busy, trying again: %s", exc)
            await asyncio.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass
class OpenedServices:
    services: WebServices
    db: Database
    redis: Redis


async def open_services(settings: Settings, metrics: WebMetrics | None = None) -> OpenedServices:
    """Bot API client, SQLite, Redis and the track cache of one web process."""
    token = settings.require_token()
    bot = make_bot(settings)
    try:
        await bot.initialize()
    except InvalidToken:
        raise
    except NetworkError as exc:
        # Telegram unreachable for now: the page and the API still serve; track fetches and
        # sends try the Bot API again when they are made.
        logger.warning("Bot API unreachable at start: %s", exc)
    db = await _open_database(settings.db_path)
    redis = Redis.from_url(settings.redis_url)
    root = settings.cache_dir / "mixer"
    services = WebServices(
        settings=settings,
        bot=bot,
        store=MixStore(db, redis),
        cache=TrackCache(bot, root / "tracks", settings.webapp_cache_mb * 10**6),
        metrics=metrics if metrics is not None else WebMetrics(),
        token=token,
        renders=asyncio.Semaphore(settings.webapp_renders),
        work_dir=root / "work",
    )
    return OpenedServices(services, db, redis)


async def close_services(opened: OpenedServices) -> None:
    await opened.services.bot.shutdown()
    await opened.db.close()
    await opened.redis.aclose()


@contextlib.asynccontextmanager
async def running(
    settings: Settings, metrics: WebMetrics | None = None, *, port: int | None = None
) -> AsyncIterator[str]:
    """The web server on ``DEMIX_WEB_HOST:DEMIX_WEB_PORT`` (or ``port``; 0: a free one) while
    the context lasts; yields its base URL. Renders under way are cancelled on the way out."""
    opened = await open_services(settings, metrics)
    try:
        runner = web.AppRunner(create_app(opened.services), access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        try:
            wanted = settings.web_port if port is None else port
            site = web.TCPSite(runner, settings.web_host, wanted)
            await site.start()
            bound = runner.addresses[0][1] if wanted == 0 and runner.addresses else wanted
            yield f"http://{settings.web_host}:{bound}"
        finally:
            await runner.cleanup()
    finally:
        await close_services(opened)


async def run_web(settings: Settings) -> None:
    """``demix web``: serve until cancelled (SIGINT/SIGTERM), with the metrics endpoint
    (``DEMIX_METRICS_PORT``) of its own."""
    metrics = WebMetrics()
    metrics_server = serve_metrics(metrics.registry, settings.metrics_host, settings.metrics_port)
    try:
        async with running(settings, metrics) as url:
            logger.info("mixer web server started", extra={"url": url})
            await asyncio.Event().wait()
    finally:
        if metrics_server is not None:
            metrics_server.close()


def main(settings: Settings) -> int:
    """``demix web`` until SIGINT/SIGTERM; exit 78 (EXIT_CONFIG) for a rejected token."""
    configure_logging(settings.log_level, "web", settings.log_format)
    settings.require_token()

    async def serve_until_stopped() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_web(settings)

    try:
        asyncio.run(serve_until_stopped())
    except InvalidToken:
        # PTB's message quotes the token; say it without.
        logger.error("TELEGRAM_BOT_TOKEN was rejected by the Bot API")
        return EXIT_CONFIG
    except OSError as exc:
        logger.error("the web server could not start: %s", exc)
        return 1
    except Exception:
        logger.exception("web server crashed")
        return 1
    logger.info("web server stopped")
    return 0
