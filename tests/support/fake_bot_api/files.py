"""Files: what users send and the bot uploads, getFile and downloads, and their size limits."""

from __future__ import annotations

import itertools
import json
import mimetypes
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tests.support.fake_bot_api.calls import Handler, MethodCall
from tests.support.fake_bot_api.telegram import (
    DOWNLOAD_LIMIT,
    LOCAL_UPLOAD_LIMIT,
    UPLOAD_LIMIT,
    WRONG_FILE,
    ApiError,
)

# The folder of a file's download path, by kind (Telegram's own folder names).
FILE_FOLDERS = {
    "audio": "music",
    "document": "documents",
    "voice": "voice",
    "video": "videos",
    "photo": "photos",
}


@dataclass
class StoredFile:
    """A file the server knows: sent by a simulated user or uploaded by the bot."""

    file_id: str
    file_unique_id: str
    kind: str  # "audio", "document", "voice", "video" or "photo"
    data: bytes
    file_name: str | None
    mime_type: str | None
    file_path: str
    declared_size: int | None = None
    duration: int | None = None
    title: str | None = None
    performer: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def size(self) -> int:
        """The size Telegram reports: ``declared_size`` when given, else the real length."""
        return self.declared_size if self.declared_size is not None else len(self.data)


@dataclass(eq=False)
class FileStore:
    """Every file the server knows, by file_id and by download path, and the downloads served.

    In ``local_mode`` it behaves like ``telegram-bot-api --local``: no 20 MB getFile limit,
    getFile answers with a path on this machine's disk, and ``file://`` uploads are read there.
    """

    lock: threading.RLock
    ids: itertools.count[int]  # shared with Chats, so no two ids the server makes are alike
    bot_id: int  # file ids carry it: Telegram's file ids are only valid for one bot
    local_mode: bool

    def __post_init__(self) -> None:
        self._files: dict[str, StoredFile] = {}
        self._files_by_path: dict[str, StoredFile] = {}
        self._downloads: list[str] = []
        self._local_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def upload_limit(self) -> int:
        return LOCAL_UPLOAD_LIMIT if self.local_mode else UPLOAD_LIMIT

    def handlers(self) -> dict[str, Handler]:
        return {"getFile": self._get_file}

    def open_local_disk(self) -> None:
        """In local mode, make the folder getFile answers with paths in (while serving)."""
        if self.local_mode:
            self._local_dir = tempfile.TemporaryDirectory(prefix="fake-bot-api-")

    def close_local_disk(self) -> None:
        if self._local_dir is not None:
            self._local_dir.cleanup()
            self._local_dir = None

    def register(
        self,
        kind: str,
        data: bytes,
        *,
        file_name: str | None,
        mime_type: str | None,
        declared_size: int | None = None,
        **meta: Any,
    ) -> StoredFile:
        with self.lock:
            number = next(self.ids)
            suffix = Path(file_name).suffix if file_name else ""
            if not suffix and mime_type:
                suffix = mimetypes.guess_extension(mime_type) or ""
            stored = StoredFile(
                file_id=f"FAKE-{kind}-{number:06d}-{self.bot_id}",
                file_unique_id=f"U{number:06d}",
                kind=kind,
                data=bytes(data),
                file_name=file_name,
                mime_type=mime_type,
                file_path=f"{FILE_FOLDERS[kind]}/file_{number}{suffix}",
                declared_size=declared_size,
                **meta,
            )
            self._files[stored.file_id] = stored
            self._files_by_path[stored.file_path] = stored
            return stored

    def from_user(
        self,
        kind: str,
        content: Path | bytes,
        *,
        file_name: str | None,
        mime_type: str | None,
        declared_size: int | None,
        **meta: Any,
    ) -> StoredFile:
        """Store a file a simulated user sends, with what their Telegram client fills in."""
        if isinstance(content, Path):
            data = content.read_bytes()
            file_name = file_name or content.name
        else:
            data = bytes(content)
        if mime_type is None and file_name:
            mime_type = mimetypes.guess_type(file_name)[0]
        if kind in {"audio", "voice", "video"}:
            # Telegram clients fill duration (and an audio's title/performer) from the file.
            probed = _probe(data)
            for key, value in probed.items():
                if key in meta and meta[key] is None:
                    meta[key] = value
            meta["duration"] = meta.get("duration") or probed.get("duration") or 0
        return self.register(
            kind,
            data,
            file_name=file_name,
            mime_type=mime_type,
            declared_size=declared_size,
            **meta,
        )

    def input_file(
        self, call: MethodCall, kind: str, value: Any, part_name: str, meta: dict[str, Any]
    ) -> StoredFile:
        """The file a send call refers to: an upload, an attach:// part, a file_id or file://."""
        part = call.files.get(part_name)
        if isinstance(value, str) and value.startswith("attach://"):
            part = call.files.get(value.removeprefix("attach://"))
            if part is None:
                raise ApiError(400, f"Bad Request: file {value} not found in the request")
        if part is not None:
            if len(part.data) > self.upload_limit:
                raise ApiError(413, "Request Entity Too Large")
            return self.register(
                kind,
                part.data,
                file_name=part.filename,
                mime_type=part.content_type or mimetypes.guess_type(part.filename or "")[0],
                **meta,
            )
        if not isinstance(value, str) or not value:
            raise ApiError(400, f"Bad Request: there is no {kind} in the request")
        if value.startswith("file://"):
            if not self.local_mode:
                raise ApiError(400, WRONG_FILE)
            path = Path(unquote(urlparse(value).path))
            if not path.is_file():
                raise ApiError(400, "Bad Request: file not found")
            return self.register(
                kind,
                path.read_bytes(),
                file_name=path.name,
                mime_type=mimetypes.guess_type(path.name)[0],
                **meta,
            )
        stored = self._files.get(value)
        if stored is None:
            raise ApiError(400, WRONG_FILE)
        if stored.kind != kind:
            raise ApiError(
                400, f"Bad Request: can't use file of type {stored.kind.title()} as {kind.title()}"
            )
        return stored

    def _get_file(self, call: MethodCall) -> dict[str, Any]:
        stored = self._files.get(str(call.params.get("file_id") or ""))
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if stored.size > DOWNLOAD_LIMIT and not self.local_mode:
            raise ApiError(400, "Bad Request: file is too big")
        file_path = stored.file_path
        if self.local_mode and self._local_dir is not None:
            # telegram-bot-api --local answers with a path on its own disk; PTB reads it there.
            local = Path(self._local_dir.name) / stored.file_path
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(stored.data)
            file_path = str(local)
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_path": file_path,
        }

    def download(self, path: str) -> StoredFile | None:
        """The file at a download path, counted as downloaded; None when there is none."""
        with self.lock:
            stored = self._files_by_path.get(path)
            if stored is not None:
                self._downloads.append(stored.file_id)
            return stored

    def file(self, file_id: str) -> StoredFile | None:
        with self.lock:
            return self._files.get(file_id)

    def downloads(self) -> list[str]:
        with self.lock:
            return list(self._downloads)


def file_json(stored: StoredFile) -> Any:
    """The Bot API object of a message's file (a photo is a list of sizes)."""
    base: dict[str, Any] = {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": stored.size,
    }
    if stored.kind == "photo":
        base.update(width=stored.width or 640, height=stored.height or 480)
        return [base]
    if stored.kind in {"audio", "voice", "video"}:
        base["duration"] = stored.duration or 0
    if stored.kind == "video":
        base.update(width=stored.width or 640, height=stored.height or 360)
    for key in ("file_name", "mime_type", "title", "performer"):
        value = getattr(stored, key)
        if value is not None:
            base[key] = value
    return base


def file_meta(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Attributes a send call sets on the file it sends (title, performer, duration, ...)."""
    keys: Iterable[str] = {
        "audio": ("title", "performer", "duration"),
        "voice": ("duration",),
        "video": ("duration", "width", "height"),
    }.get(kind, ())
    meta = {key: params[key] for key in keys if params.get(key) is not None}
    for key in ("duration", "width", "height"):
        if key in meta:
            meta[key] = int(meta[key])
    return meta


def _probe(data: bytes) -> dict[str, Any]:
    """Duration and title/performer tags of an audio file, as ffprobe reads them ({} if not)."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None or not data:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".bin") as handle:
        handle.write(data)
        handle.flush()
        result = subprocess.run(
            [
                ffprobe,
                "-v",
                "error",
                "-show_entries",
                "format=duration:format_tags=title,artist",
                "-of",
                "json",
                handle.name,
            ],
            capture_output=True,
            check=False,
        )
    if result.returncode != 0:
        return {}
    try:
        found = json.loads(result.stdout).get("format", {})
        tags = {key.lower(): value for key, value in (found.get("tags") or {}).items()}
        probed: dict[str, Any] = {"duration": round(float(found["duration"]))}
    except (ValueError, KeyError, TypeError):
        return {}
    if tags.get("title"):
        probed["title"] = tags["title"]
    if tags.get("artist"):
        probed["performer"] = tags["artist"]
    return probed
