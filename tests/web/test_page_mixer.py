"""The mixer page in a real browser (Debian's chromium through Playwright) against the real web
server (``demix web``'s app on 127.0.0.1) and the fake Bot API: opened as Telegram opens a Mini
App (signed ``initData`` in the URL fragment), it plays every track in sync, mutes, solos and
sets levels, previews the tempo, and its Send makes the server render Σ gᵢ·trackᵢ and send it
to the chat; in the theme's colours and the user's language; nothing from other hosts, no
console errors. Screenshots (360×740) go to the test's tmp folder.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from common.mixes import MixRecord
from common.settings import Settings
from tests.support.audio import decode
from tests.support.browser import (
    PageWatch,
    computed,
    launch,
    media,
    phone_context,
    poll,
    rgb,
    spread,
    wait_state,
)
from tests.support.fake_bot_api import TEST_TOKEN, FakeBotApi
from tests.support.fake_bot_api.files import StoredFile
from tests.support.telegram_webapp import launch_fragment, sign_init_data, webapp_user
from tests.support.web import decoded_tracks, deliver_mix, make_tracks, running_web_app

# Every test here runs in the session's event loop, the browser's.
pytestmark = pytest.mark.asyncio(loop_scope="session")

OWNER = 601
TRACKS = ("drums", "bass", "vocals", "rest")
SECONDS = 4.0
# Themes no default of the page's CSS happens to equal, so the checks can fail.
LIGHT = {
    "bg_color": "#fdf6e3",
    "text_color": "#073642",
    "hint_color": "#839496",
    "link_color": "#268bd2",
    "button_color": "#268bd2",
    "button_text_color": "#fdf6e3",
    "secondary_bg_color": "#eee8d5",
}
DARK = {
    "bg_color": "#1c1f26",
    "text_color": "#e8e6e3",
    "hint_color": "#8a8f98",
    "link_color": "#b48ead",
    "button_color": "#b48ead",
    "button_text_color": "#101010",
    "secondary_bg_color": "#262a33",
}
SYNC_S = 0.020


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless chromium for the session."""
    async with async_playwright() as playwright:
        launched = await launch(playwright)
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh phone-sized context per test (no cache or storage shared between tests)."""
    fresh = await phone_context(browser)
    try:
        yield fresh
    finally:
        await fresh.close()


@pytest.fixture(scope="session")
def page_tracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four distinct 4-second mp3 tracks, made once."""
    return make_tracks(tmp_path_factory.mktemp("page-tracks"), TRACKS, seconds=SECONDS)


@pytest.fixture
def web_settings(service_settings: Callable[..., Settings]) -> Settings:
    return service_settings(webapp_url="http://127.0.0.1:9")


@pytest_asyncio.fixture(loop_scope="session")
async def server(web_settings: Settings) -> AsyncIterator[str]:
    """``demix web``'s server on a free port, in the browser's loop; its base URL."""
    async with running_web_app(web_settings) as url:
        yield url


@dataclass
class Mixer:
    page: Page
    watch: PageWatch
    base_url: str

    def clean(self) -> None:
        """Nothing but our server was asked for anything; the console has no error."""
        assert self.watch.foreign_requests(self.base_url) == []
        assert self.watch.console_errors() == []


async def open_mixer(
    context: BrowserContext,
    base_url: str,
    mix_id: str,
    *,
    language: str = "en",
    theme: Mapping[str, str] | None = LIGHT,
    token: str = TEST_TOKEN,
    user_id: int = OWNER,
    init_data: str | None = None,
) -> Mixer:
    """Open ``/mix/<id>`` as a Telegram client does: signed init data in the fragment."""
    if init_data is None:
        init_data = sign_init_data(token, webapp_user(user_id, language))
    fragment = launch_fragment(init_data, theme) if init_data else ""
    page = await context.new_page()
    watch = PageWatch().attach(page)
    await page.goto(f"{base_url}/mix/{mix_id}{fragment}")
    return Mixer(page, watch, base_url)


async def texts(page: Page, selector: str) -> list[str]:
    return [text.strip() for text in await page.locator(selector).all_text_contents()]


def snr_db(reference: np.ndarray, signal: np.ndarray) -> float:
    """How close ``signal`` is to ``reference``: 10·log10(‖ref‖² / ‖signal − ref‖²)."""
    n = min(reference.shape[-1], signal.shape[-1])
    reference, signal = reference[..., :n].astype(np.float64), signal[..., :n].astype(np.float64)
    error = float(np.sum((signal - reference) ** 2))
    return 10 * np.log10(float(np.sum(reference**2)) / max(error, 1e-20))


async def test_page_loads_plays_and_seeks_in_sync(
    context: BrowserContext,
    server: str,
    fake_bot_api: FakeBotApi,
    web_settings: Settings,
    page_tracks: dict[str, Path],
    tmp_path: Path,
) -> None:
    record = await deliver_mix(fake_bot_api, web_settings, page_tracks, user_id=OWNER)
    mixer = await open_mixer(context, server, record.mix_id, theme=LIGHT)
    page = mixer.page
    await wait_state(page, "ready")

    # The hooks: one row per track, in delivery order, each with mute, solo and a level.
    names = await page.eval_on_selector_all(
        "[data-track]", "rows => rows.map(r => r.dataset.track)"
    )
    assert names == list(TRACKS)
    for name in TRACKS:
        row = page.locator(f'[data-track="{name}"]')
        for action in ("mute", "solo"):
            assert (
                await row.locator(f"button[data-action={action}]").get_attribute("aria-pressed")
                == "false"
            )
        level = row.locator("input[type=range][data-action=level]")
        assert [await level.get_attribute(a) for a in ("min", "max", "step")] == ["-24", "6", "0.5"]
        assert await level.input_value() == "0"
    assert await texts(page, "[data-track] .name") == ["Drums", "Bass", "Vocals", "Everything else"]
    tempo = page.locator("input[type=range][data-action=tempo]")
    pitch = page.locator("input[type=range][data-action=pitch]")
    assert [await tempo.get_attribute(a) for a in ("min", "max")] == ["50", "150"]
    assert await tempo.input_value() == "100"
    assert [await pitch.get_attribute(a) for a in ("min", "max")] == ["-12", "12"]
    assert await pitch.input_value() == "0"
    assert await page.locator("button[data-action=send]").is_enabled()
    assert await page.locator("canvas").count() == len(TRACKS)

    # Telegram's theme colours, from the fragment's tgWebAppThemeParams.
    assert await computed(page, "body", "background-color") == rgb(LIGHT["bg_color"])
    assert await computed(page, "body", "color") == rgb(LIGHT["text_color"])
    assert await computed(page, "[data-action=send]", "background-color") == rgb(
        LIGHT["button_color"]
    )
    assert await computed(page, "[data-action=send]", "color") == rgb(LIGHT["button_text_color"])
    assert await computed(page, "[data-track]", "background-color") == rgb(
        LIGHT["secondary_bg_color"]
    )
    assert await computed(page, ".status", "color") == rgb(LIGHT["hint_color"])

    # A phone's width: nothing wider than the screen.
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    await page.screenshot(path=tmp_path / "mixer-360x740-light.png")

    # Play: every track's element plays, together.
    await page.click("button[data-action=play]")
    playing = await poll(
        lambda: media(page),
        lambda els: (
            len(els) == len(TRACKS) and all(not e["paused"] and e["time"] > 0.5 for e in els)
        ),
        what="every track playing past 0.5 s",
    )
    assert spread(playing) <= SYNC_S, playing
    assert await page.get_attribute("button[data-action=play]", "aria-pressed") == "true"

    # Seek on the one timeline: every element moves there and they play on within 20 ms.
    await page.locator("input[type=range][data-action=seek]").fill("2.5")
    after_seek = await poll(
        lambda: media(page),
        lambda els: all(not e["paused"] and not e["seeking"] and e["time"] > 2.55 for e in els),
        what="every track playing after the seek to 2.5 s",
    )
    assert all(e["time"] < 3.5 for e in after_seek), after_seek
    for _ in range(5):
        sample = await media(page)
        if any(e["paused"] for e in sample):
            break  # the end of the 4-second song
        assert spread(sample) <= SYNC_S, sample

    # Pause stops them all.
    await page.click("button[data-action=play]")
    paused = await poll(
        lambda: media(page), lambda els: all(e["paused"] for e in els), what="pause"
    )
    assert spread(paused) <= SYNC_S, paused
    mixer.clean()


async def test_page_mutes_solos_sets_levels_and_sends_the_mix(
    context: BrowserContext,
    server: str,
    fake_bot_api: FakeBotApi,
    web_settings: Settings,
    page_tracks: dict[str, Path],
    tmp_path: Path,
) -> None:
    record = await deliver_mix(fake_bot_api, web_settings, page_tracks, user_id=OWNER)
    mixer = await open_mixer(context, server, record.mix_id)
    page = mixer.page
    await wait_state(page, "ready")

    drums = page.locator('[data-track="drums"]')
    await drums.locator("button[data-action=mute]").click()
    assert await drums.locator("button[data-action=mute]").get_attribute("aria-pressed") == "true"
    for name in ("vocals", "bass"):
        solo = page.locator(f'[data-track="{name}"] button[data-action=solo]')
        await solo.click()
        assert await solo.get_attribute("aria-pressed") == "true"
    # The vocals 6 dB down, as a user does it on the keyboard (12 steps of 0.5 dB).
    level = page.locator('[data-track="vocals"] input[data-action=level]')
    await level.focus()
    for _ in range(12):
        await level.press("ArrowLeft")
    assert await level.input_value() == "-6"
    assert "6.0 dB" in await page.locator('[data-track="vocals"] .level-value').inner_text()

    # What the preview plays: the gains through Web Audio gain nodes (+dB needs them).
    await page.click("button[data-action=play]")
    assert await page.get_attribute("body", "data-audio") == "webaudio"
    gains = await page.eval_on_selector_all(
        "[data-track]", "rows => rows.map(r => [r.dataset.track, Number(r.dataset.gain)])"
    )
    assert gains == [["drums", 0], ["bass", 1], ["vocals", 0.5012], ["rest", 0]]
    await page.click("button[data-action=play]")

    # Tempo 80 %: every element plays at 0.8 with its pitch kept; back to 100 % to send.
    tempo = page.locator("input[type=range][data-action=tempo]")
    await tempo.fill("80")
    slowed = await media(page)
    assert [(e["rate"], e["preservesPitch"]) for e in slowed] == [(0.8, True)] * len(TRACKS)
    assert (await page.locator("#tempo-value").inner_text()).startswith("80")
    await tempo.fill("100")
    assert [e["rate"] for e in await media(page)] == [1.0] * len(TRACKS)

    before = len(fake_bot_api.audio_messages(OWNER))
    await page.click("button[data-action=send]")
    await wait_state(page, "sent")
    assert "the mix will arrive in the chat" in await page.locator("#send-status").inner_text()
    posted = [json.loads(body or "{}") for url, body in mixer.watch.posted if "/render" in url]
    assert posted == [
        {
            "levels_db": {"drums": 0, "bass": 0, "vocals": -6, "rest": 0},
            "muted": ["drums"],
            "solo": ["bass", "vocals"],
            "tempo": 1,
            "pitch_semitones": 0,
        }
    ]

    # The mix arrives in the chat: Σ gᵢ·trackᵢ with only bass and vocals (-6 dB) in it.
    def mix_file() -> StoredFile | None:
        for message in fake_bot_api.audio_messages(OWNER)[before:]:
            if message.file is not None and message.file.file_name == "Test Song - mix.mp3":
                return message.file
        return None

    async def arrived() -> StoredFile | None:
        return mix_file()

    stored = await poll(arrived, lambda found: found is not None, timeout=60, what="the mix")
    assert stored is not None
    mix_path = tmp_path / "mix.mp3"
    mix_path.write_bytes(stored.data)
    heard = decode(mix_path)
    tracks = decoded_tracks(page_tracks)
    expected = 10 ** (-6 / 20) * tracks["vocals"] + tracks["bass"]
    everything = sum(tracks[name] for name in TRACKS)
    assert abs(heard.shape[1] - expected.shape[1]) <= 0.01 * expected.shape[1]
    assert snr_db(expected, heard) >= 20, snr_db(expected, heard)
    # ...and not the whole song (the comparison can tell them apart).
    assert snr_db(everything, heard) < 10
    mixer.clean()


async def test_page_in_russian_with_a_dark_theme_and_a_track_telegram_withholds(
    context: BrowserContext,
    server: str,
    fake_bot_api: FakeBotApi,
    web_settings: Settings,
    page_tracks: dict[str, Path],
    tmp_path: Path,
) -> None:
    # A track over the Bot API's 20 MB download limit: named on the page with the reason.
    tracks: dict[str, Path | bytes] = {**page_tracks, "piano": b"\xff\xfb" * (11 * 1024 * 1024)}
    record: MixRecord = await deliver_mix(
        fake_bot_api, web_settings, tracks, user_id=OWNER, language="ru"
    )
    mixer = await open_mixer(context, server, record.mix_id, language="ru", theme=DARK)
    page = mixer.page
    await wait_state(page, "ready")

    assert await page.get_attribute("html", "lang") == "ru"
    assert await texts(page, "[data-track] .name") == [
        "Ударные",
        "Бас",
        "Вокал",
        "Всё остальное",
        "Клавишные",
    ]
    assert await page.locator("button[data-action=play]").inner_text() == "Играть"
    assert await page.locator("button[data-action=send]").inner_text() == "Отправить микс"
    assert await page.locator("#tempo-label").inner_text() == "Темп"
    assert "полутон" in await page.locator("#pitch-value").inner_text()

    piano = page.locator('[data-track="piano"]')
    reason = (await piano.locator(".track-error").inner_text()).strip()
    assert reason, "the withheld track says why"
    assert not await piano.locator("button[data-action=mute]").is_enabled()
    audio_tracks = [e["track"] for e in await media(page)]
    assert audio_tracks == list(TRACKS)

    assert await computed(page, "body", "background-color") == rgb(DARK["bg_color"])
    assert await computed(page, "[data-action=play]", "background-color") == rgb(
        DARK["button_color"]
    )
    assert await computed(page, "[data-track]", "background-color") == rgb(
        DARK["secondary_bg_color"]
    )
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    await page.screenshot(path=tmp_path / "mixer-360x740-dark-ru.png")

    # The user switches Telegram to its light theme: the client sends theme_changed.
    await page.evaluate(
        "params => window.Telegram.WebView.receiveEvent('theme_changed', {theme_params: params})",
        LIGHT,
    )
    assert await computed(page, "body", "background-color") == rgb(LIGHT["bg_color"])
    mixer.clean()


@pytest.mark.parametrize(
    ("how", "banner"),
    [
        ("forged", "expired"),  # signed with another bot's token: 401
        ("stranger", "another user"),  # a valid user who did not send the song: 403
        ("none", "Mix button"),  # opened outside Telegram: no init data at all
    ],
)
async def test_page_refused(
    context: BrowserContext,
    server: str,
    fake_bot_api: FakeBotApi,
    web_settings: Settings,
    page_tracks: dict[str, Path],
    how: str,
    banner: str,
) -> None:
    record = await deliver_mix(
        fake_bot_api, web_settings, {"drums": page_tracks["drums"]}, user_id=OWNER
    )
    init_data = {
        "forged": sign_init_data("123456:another-bots-token", webapp_user(OWNER)),
        "stranger": sign_init_data(TEST_TOKEN, webapp_user(OWNER + 1)),
        "none": "",
    }[how]
    mixer = await open_mixer(context, server, record.mix_id, init_data=init_data)
    await wait_state(mixer.page, "error")
    assert banner in await mixer.page.locator("#banner").inner_text()
    if how == "none":
        # No Telegram theme: the page's own colours, light or dark as the system prefers.
        await mixer.page.emulate_media(color_scheme="dark")
        assert await computed(mixer.page, "body", "background-color") == rgb("#17212b")
        await mixer.page.emulate_media(color_scheme="light")
        assert await computed(mixer.page, "body", "background-color") == rgb("#ffffff")
    assert await mixer.page.locator("audio").count() == 0
    assert mixer.watch.foreign_requests(server) == []
    # The refused API call is the only error the browser logs (its 401/403 status).
    assert all("status of 40" in error for error in mixer.watch.console_errors())
