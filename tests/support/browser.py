"""A real browser for the mixer page's tests: Debian's chromium driven by Playwright (async API).

The browser is never downloaded (``playwright install`` is not run): Playwright launches
``/usr/bin/chromium``, which ``scripts/install-system-packages.sh`` installs. Tests use the
async API in a session-scoped event loop (one browser for the session): the sync API marks
its own loop as running in the main thread between calls, which breaks every other async
test of the session.

The page runs under the server's strict Content-Security-Policy, so nothing here evaluates
strings inside the page (``wait_for_function`` with a string would be ``eval``): waits poll
``page.evaluate`` (a DevTools call, outside the CSP) or wait for selectors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, Request

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
    "--disable-gpu",
    "--disable-dev-shm-usage",
]
PHONE = {"width": 360, "height": 740}

T = TypeVar("T")


async def launch(playwright: Playwright) -> Browser:
    """Headless chromium from Debian's package; a clear failure when it is missing."""
    if not CHROMIUM.exists():
        raise AssertionError(
            f"{CHROMIUM} is missing: run `make install` (scripts/install-system-packages.sh "
            "installs Debian's chromium for the mixer page's tests)"
        )
    return await playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
    )


async def phone_context(browser: Browser, **options: Any) -> BrowserContext:
    """A fresh context the size of a phone (360×740 CSS pixels, touch, 2× pixels)."""
    values: dict[str, Any] = {
        "viewport": PHONE,
        "device_scale_factor": 2,
        "is_mobile": True,
        "has_touch": True,
    }
    values.update(options)
    return await browser.new_context(**values)


@dataclass
class PageWatch:
    """What a page did: every request's URL, console messages, uncaught errors."""

    requests: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    posted: list[tuple[str, str | None]] = field(default_factory=list)

    def attach(self, page: Page) -> PageWatch:
        page.on("request", self._on_request)
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        return self

    def _on_request(self, request: Request) -> None:
        self.requests.append(request.url)
        if request.method == "POST":
            self.posted.append((request.url, request.post_data))

    def _on_console(self, message: ConsoleMessage) -> None:
        self.console.append((message.type, message.text))

    def foreign_requests(self, base_url: str) -> list[str]:
        """Requests to any host but ``base_url``'s (data: URLs are the page's own)."""
        origin = urlsplit(base_url)[:2]
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url)[:2] != origin
        ]

    def console_errors(self) -> list[str]:
        return [text for kind, text in self.console if kind == "error"] + self.errors


async def poll(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Await ``probe()`` until ``done`` holds for its value; return that value, or fail with
    the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: last {value!r}")
        await asyncio.sleep(interval)


async def state(page: Page) -> str:
    return str(await page.evaluate("document.body.dataset.state"))


async def wait_state(page: Page, wanted: str, timeout: float = 15.0) -> None:
    """Wait until ``body[data-state]`` is ``wanted``; fail early, with the banner's text, when
    it becomes ``error`` instead (the one state a page does not leave by itself)."""
    await poll(
        lambda: state(page),
        lambda now: now in (wanted, "error"),
        timeout=timeout,
        what=f"page state {wanted!r}",
    )
    now = await state(page)
    if now != wanted:
        banner = await page.evaluate("document.getElementById('banner').textContent")
        raise AssertionError(f"page state is {now!r}, not {wanted!r}; banner: {banner!r}")


MEDIA_JS = """() => [...document.querySelectorAll('audio')].map(a => ({
  track: a.dataset.audio, time: a.currentTime, paused: a.paused, seeking: a.seeking,
  rate: a.playbackRate, preservesPitch: a.preservesPitch, readyState: a.readyState,
  src: a.currentSrc, volume: a.volume,
}))"""


async def media(page: Page) -> list[dict[str, Any]]:
    """Every track's media element: position, paused, rate, preservesPitch (read together,
    in one task of the page)."""
    return list(await page.evaluate(MEDIA_JS))


def spread(elements: list[dict[str, Any]]) -> float:
    """The largest difference of position between the media elements, in seconds."""
    times = [element["time"] for element in elements]
    return max(times) - min(times)


async def computed(page: Page, selector: str, prop: str) -> str:
    """A computed style value of the first element matching ``selector``."""
    return str(
        await page.eval_on_selector(
            selector, "(node, prop) => getComputedStyle(node).getPropertyValue(prop)", prop
        )
    )


def rgb(hex_colour: str) -> str:
    """``#rrggbb`` as the ``rgb(r, g, b)`` a computed style gives."""
    value = hex_colour.lstrip("#")
    red, green, blue = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgb({red}, {green}, {blue})"
