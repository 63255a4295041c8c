"""The HTTP side: a real aiohttp server on 127.0.0.1 in its own thread, and request parsing.

It answers the Bot API URLs PTB calls (``/bot<token>/<method>`` with query, form, multipart
or JSON parameters, and ``/file/bot<token>/<path>`` downloads), applies the injected faults,
dispatches each method to its handler, and records every call for the tests.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import socket
import threading
import time
from typing import Any
from urllib.parse import unquote

from aiohttp import BodyPartReader, web

from tests.support.fake_bot_api.calls import ApiCall, Handler, MethodCall, UploadedPart
from tests.support.fake_bot_api.faults import Fault, Faults
from tests.support.fake_bot_api.files import FileStore
from tests.support.fake_bot_api.telegram import MB, ApiError, names
from tests.support.fake_bot_api.updates import UpdateQueue

logger = logging.getLogger(__name__)

# Bot API parameters that PTB (and Telegram) carry as JSON text inside form fields.
_JSON_PARAMS = names(
    "reply_markup media allowed_updates entities caption_entities commands scope "
    "link_preview_options reply_parameters"
)
_INT_PARAMS = names(
    "chat_id from_chat_id user_id message_id message_thread_id reply_to_message_id offset "
    "limit duration width height cache_time max_connections"
)
_FLOAT_PARAMS = frozenset({"timeout"})
_BOOL_PARAMS = names(
    "show_alert disable_notification protect_content allow_sending_without_reply "
    "drop_pending_updates disable_web_page_preview disable_content_type_detection "
    "supports_streaming has_spoiler show_caption_above_media allow_paid_broadcast"
)


class HttpServer:
    """Serves the Bot API over HTTP; ``handlers`` answer every method but getUpdates.

    The server runs in its own thread with its own event loop, so sync tests, async tests
    (PTB running in the test's loop) and child processes can all use it. Handlers run holding
    ``lock``, the lock that guards all of the fake's state.
    """

    def __init__(
        self,
        token: str,
        lock: threading.RLock,
        handlers: dict[str, Handler],
        *,
        updates: UpdateQueue,
        files: FileStore,
        faults: Faults,
        host: str = "127.0.0.1",
    ) -> None:
        self._token = token
        self._host = host
        self._lock = lock
        self._handlers = handlers
        self._updates = updates
        self._files = files
        self._faults = faults
        # Telegram's method names are case-insensitive; calls are recorded by the real name.
        self._method_names = {name.lower(): name for name in [*handlers, "getUpdates"]}
        self._calls: list[ApiCall] = []
        # Requests received per method, counted before any latency or fault: a call under
        # way has arrived but is not in _calls yet.
        self._arrived: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeBotApi is not started")
        return self._port

    def method_name(self, asked: str) -> str:
        """The Bot API method ``asked`` names, spelled as it is dispatched and recorded."""
        return self._method_names.get(asked.lower(), asked)

    def calls(self, method: str | None) -> list[ApiCall]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def arrived(self, method: str) -> int:
        with self._lock:
            return self._arrived.get(method, 0)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Serve on the host address (127.0.0.1 unless told) in a background thread;
        returns once it accepts connections.

        The first start picks a free port; a restart after :meth:`stop` reuses it.
        """
        if self._thread is not None:
            raise RuntimeError("FakeBotApi is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port or 0))
        self._port = int(sock.getsockname()[1])
        self._files.open_local_disk()
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open(sock))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop = loop
        self._updates.attach(loop)
        self._thread = threading.Thread(target=serve, name="fake-bot-api", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10) or failure:
            self._thread = None
            raise RuntimeError("fake Bot API server did not start") from (
                failure[0] if failure else None
            )

    def stop(self) -> None:
        """Release long polls, close connections and join the server thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)
        self._loop = self._thread = None
        self._updates.detach()
        self._files.close_local_disk()

    async def _open(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=self._files.upload_limit + MB)
        app.router.add_route("*", "/bot{token}/{method}", self._on_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._on_download)
        # No access log: request paths carry the bot token.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self._updates.open()

    async def _close(self) -> None:
        self._updates.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- requests ------------------------------------------------------------------------------

    async def _on_method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self._token:
            return _error_response(ApiError(401, "Unauthorized"))
        method = self.method_name(request.match_info["method"])
        try:
            params, files = await _read_params(request)
        except ApiError as err:
            self._record(method, {}, {}, err.status, err.description, None)
            return _error_response(err)
        except web.HTTPRequestEntityTooLarge:
            too_large = ApiError(413, "Request Entity Too Large")
            self._record(method, {}, {}, 413, too_large.description, None)
            return _error_response(too_large)
        except Exception as exc:
            unreadable = ApiError(400, f"Bad Request: can't parse the request body: {exc!r}")
            self._record(method, {}, {}, 400, unreadable.description, None)
            return _error_response(unreadable)
        call = MethodCall(method, params, files)
        with self._lock:
            self._arrived[method] = self._arrived.get(method, 0) + 1
        if method not in self._handlers and method != "getUpdates":
            self._record(method, params, files, 404, "Not Found", None)
            return _error_response(ApiError(404, "Not Found"))

        delay = self._faults.latency(method)
        if delay:
            await asyncio.sleep(delay)
        fault = self._faults.take(method, params)
        if fault is not None and fault.stall_s:
            await asyncio.sleep(fault.stall_s)
            if not fault.applied:
                return self._fail(call, fault)
            fault = None  # a late success: the call takes effect, the client has given up
        if fault is not None and not fault.applied:
            return self._fail(call, fault)
        try:
            if method == "getUpdates":
                result = await self._updates.get_updates(call)
            else:
                with self._lock:
                    result = self._handlers[method](call)
        except ApiError as err:
            self._record(method, params, files, err.status, err.description, None)
            return _error_response(err)
        except Exception as exc:
            logger.exception("fake Bot API failed on %s", method)
            bug = ApiError(500, f"Internal Server Error: fake Bot API bug: {exc!r}")
            self._record(method, params, files, 500, bug.description, None)
            return _error_response(bug)
        if fault is not None:
            return self._fail(call, fault)
        self._record(method, params, files, 200, None, result)
        return web.json_response({"ok": True, "result": result}, status=200)

    def _fail(self, call: MethodCall, fault: Fault) -> web.Response:
        err = _fault_error(fault)
        self._record(call.method, call.params, call.files, err.status, err.description, None)
        return _error_response(err)

    async def _on_download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self._token:
            return _error_response(ApiError(401, "Unauthorized"))
        path = unquote(request.match_info["path"])
        fault = self._faults.take("download", {"file_path": path})
        if fault is not None and fault.stall_s:
            await asyncio.sleep(fault.stall_s)
            fault = None
        if fault is not None:
            return _error_response(_fault_error(fault))
        stored = self._files.download(path)
        if stored is None:
            return _error_response(ApiError(404, "Not Found"))
        return web.Response(
            body=stored.data, content_type=stored.mime_type or "application/octet-stream"
        )

    def _record(
        self,
        method: str,
        params: dict[str, Any],
        files: dict[str, UploadedPart],
        status: int,
        description: str | None,
        result: Any,
    ) -> None:
        call = ApiCall(
            method,
            copy.deepcopy(params),
            dict(files),
            status,
            description,
            copy.deepcopy(result),
            time.time(),
        )
        with self._lock:
            self._calls.append(call)


def _error_response(err: ApiError) -> web.Response:
    return web.json_response(err.payload(), status=err.status)


def _fault_error(fault: Fault) -> ApiError:
    return ApiError(fault.status, fault.description, fault.retry_after)


# A quoted parameter: ``name="value"``, with backslash escapes.
_DISPOSITION_PARAM = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _disposition(part: BodyPartReader) -> tuple[str | None, str | None]:
    """A multipart part's field name and file name.

    aiohttp reads no parameter at all from a header whose quoted file name holds two ``;``
    (``Tom &amp; Jerry &lt;live&gt;.mp3``); Telegram reads it, so then the fake reads the
    header itself.
    """
    if part.name is not None:
        return part.name, part.filename
    header = part.headers.get("Content-Disposition", "")
    params = {
        key.lower(): re.sub(r"\\(.)", r"\1", value)
        for key, value in _DISPOSITION_PARAM.findall(header)
    }
    return params.get("name"), params.get("filename")


async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, UploadedPart]]:
    """A request's decoded parameters (query, form, multipart or JSON) and its file parts."""
    raw: dict[str, Any] = dict(request.query)
    files: dict[str, UploadedPart] = {}
    content_type = request.content_type
    if request.method == "POST" and request.can_read_body:
        if content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse JSON object") from None
            if not isinstance(body, dict):
                raise ApiError(400, "Bad Request: can't parse JSON object")
            raw.update(body)
        elif content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                name, filename = _disposition(part)
                if name is None:
                    continue
                if filename is not None:
                    data = bytes(await part.read(decode=True))
                    files[name] = UploadedPart(filename, part.headers.get("Content-Type"), data)
                else:
                    raw[name] = await part.text()
        elif content_type == "application/x-www-form-urlencoded":
            raw.update(await request.post())
    params = {name: _decode_param(name, value) for name, value in raw.items()}
    return params, files


def _decode_param(name: str, value: Any) -> Any:
    """Turn a form/multipart string into the value it encodes (PTB JSON-encodes non-strings)."""
    if not isinstance(value, str):
        return value
    if name in _JSON_PARAMS:
        try:
            return json.loads(value)
        except ValueError:
            if name == "reply_markup":
                raise ApiError(
                    400, "Bad Request: can't parse reply keyboard markup JSON object"
                ) from None
            raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from None
    if name in _INT_PARAMS:
        try:
            return int(value)
        except ValueError:
            return value
    if name in _FLOAT_PARAMS:
        try:
            return float(value)
        except ValueError:
            return value
    if name in _BOOL_PARAMS:
        return value.strip().lower() in {"true", "1"}
    return value
