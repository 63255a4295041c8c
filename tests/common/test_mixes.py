"""The mixer's shared pieces: mix ids, the record's JSON, the job result carrying it, the
Mix button on the rating keyboard, DEMIX_WEBAPP_URL's checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.jobs import JobOutcome, SeparationJob
from common.mixes import MixRecord, MixTrack, is_mix_id, mix_id, mix_url
from common.rating import MIX_BUTTON, mix_url_of, rating_keyboard
from common.settings import Settings

TOKEN = "123456:TEST-token"
LEDGER = "demix:delivery:sep:7:vocals:1764860000000"


def test_a_mix_id_is_opaque_stable_and_tied_to_the_delivery_and_the_token() -> None:
    first = mix_id(TOKEN, LEDGER)
    assert is_mix_id(first) and len(first) == 22
    assert mix_id(TOKEN, LEDGER) == first, "a re-run of the job finds the same id"
    assert mix_id(TOKEN, LEDGER.replace("1764860000000", "1764860000001")) != first
    assert mix_id("999:other", LEDGER) != first
    for bad in ("", "short", first + "A", first[:-1] + "/", "../" + first[3:]):
        assert not is_mix_id(bad)
    assert mix_url("https://mix.example.org/", first) == f"https://mix.example.org/mix/{first}"


def record(**changes: object) -> MixRecord:
    values: dict[str, object] = {
        "mix_id": mix_id(TOKEN, LEDGER),
        "job_id": "sep:7:vocals",
        "request_id": 7,
        "user_id": 42,
        "chat_id": 42,
        "song_name": "Мой трек",
        "output_format": "flac",
        "language": "ru",
        "tracks": (MixTrack("vocals", "FILE-1", 1000), MixTrack("no_vocals", "FILE-2", None)),
        "duration_s": 12.5,
        "created_at": 1.5,
        "artist": None,
    }
    values.update(changes)
    return MixRecord(**values)  # type: ignore[arg-type]


def test_the_record_survives_json_and_the_job_result() -> None:
    mix = record()
    assert MixRecord.from_json(mix.to_json()) == mix
    assert mix.track_names == ("vocals", "no_vocals") and mix.track("rest") is None
    outcome = JobOutcome(("vocals", "no_vocals"), 12.5, {"total_s": 3.0}, mix=mix.to_dict())
    again = JobOutcome.from_result(outcome.to_result())
    assert again.mix is not None and MixRecord.from_dict(again.mix) == mix
    # A result of a worker from before the mixer has no mix; one without a button neither.
    old = {"tracks": ["vocals"], "audio_seconds": 1.0, "timings": {}}
    assert JobOutcome.from_result(old).mix is None
    assert "mix" not in JobOutcome(("vocals",), 1.0).to_result()


def test_private_chats_are_the_users_own() -> None:
    job = SeparationJob(1, chat_id=42, user_id=42, file_id="F", song_name="s", stems=("vocals",),
                        status_message_id=1)  # fmt: skip
    assert job.private_chat
    group = SeparationJob(1, chat_id=-100123, user_id=42, file_id="F", song_name="s",
                          stems=("vocals",), status_message_id=1)  # fmt: skip
    assert not group.private_chat


def test_the_rating_keyboard_has_the_mix_button_only_with_a_url() -> None:
    plain = rating_keyboard(7, ("vocals",))
    assert len(plain.inline_keyboard) == 1 and mix_url_of(plain) is None
    url = "https://mix.example.org/mix/" + "A" * 22
    with_mix = rating_keyboard(7, ("vocals",), chosen="up", mix_url=url)
    [votes, [button]] = with_mix.inline_keyboard
    assert [b.callback_data for b in votes] == [b.callback_data for b in plain.inline_keyboard[0]]
    assert "Mix" in button.text and button.text == MIX_BUTTON
    assert button.web_app is not None and button.web_app.url == url
    assert mix_url_of(with_mix) == url


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://mix.example.org", "https://mix.example.org"),
        ("https://mix.example.org/", "https://mix.example.org"),
        ("https://example.org/app/", "https://example.org/app"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("", None),
    ],
)
def test_webapp_url_is_https_or_local_http(given: str, kept: str | None) -> None:
    assert Settings(_env_file=None, webapp_url=given).webapp_url == kept  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "given",
    [
        "http://mix.example.org",
        "ftp://mix.example.org",
        "mix.example.org",
        "https://",
        "https://mix.example.org/?a=1",
        "https://mix.example.org/#x",
        "https://user:pw@mix.example.org",
    ],
)
def test_other_webapp_urls_are_refused(given: str) -> None:
    with pytest.raises(ValidationError, match="DEMIX_WEBAPP_URL"):
        Settings(_env_file=None, webapp_url=given)  # type: ignore[call-arg]
