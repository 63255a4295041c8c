"""Mini App initData as Telegram specifies it, and the signed track URLs (web/auth.py), also
through the HTTP API: forged, expired, future, missing, malformed, another user's."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, quote, urlencode

import aiohttp
import pytest

from common.mixes import MixRecord
from tests.support.fake_bot_api import TEST_TOKEN, FakeBotApi
from tests.support.telegram_webapp import init_data_hash, sign_init_data, webapp_user
from tests.support.web import deliver_mix
from tests.web.conftest import OWNER, STRANGER, tma
from web.auth import AuthError, track_token, track_token_valid, validate_init_data

DAY = 86_400


def check(init_data: str, *, now: float | None = None, token: str = TEST_TOKEN) -> int:
    return validate_init_data(init_data, token, DAY, now=now).user_id


def resign(fields: dict[str, str]) -> str:
    """``fields`` with a correct hash (the token's), URL-encoded as Telegram does."""
    fields = {key: value for key, value in fields.items() if key != "hash"}
    fields["hash"] = init_data_hash(TEST_TOKEN, fields)
    return urlencode(fields, quote_via=quote)


def test_valid_init_data_gives_its_user() -> None:
    signed = sign_init_data(TEST_TOKEN, webapp_user(OWNER, "ru"))
    user = validate_init_data(signed, TEST_TOKEN, DAY)
    assert (user.user_id, user.language_code) == (OWNER, "ru")
    # Fields Telegram adds later (signature, chat_type, ...) are signed like the others.
    extra = sign_init_data(TEST_TOKEN, webapp_user(OWNER), extra={"signature": "abc"})
    assert check(extra) == OWNER


def test_a_forged_hash_or_field_is_refused() -> None:
    signed = sign_init_data(TEST_TOKEN, webapp_user(OWNER))
    fields = dict(parse_qsl(signed))
    flipped = fields["hash"][:-1] + ("0" if fields["hash"][-1] != "0" else "1")
    with pytest.raises(AuthError):
        check(urlencode({**fields, "hash": flipped}, quote_via=quote))
    # Another user id under the owner's hash.
    user = fields["user"].replace(str(OWNER), str(STRANGER))
    with pytest.raises(AuthError):
        check(urlencode({**fields, "user": user}, quote_via=quote))
    # Signed with another bot's token.
    with pytest.raises(AuthError, match="signature"):
        check(sign_init_data("999:other-token", webapp_user(OWNER)))
    # The hash in upper case, or with other bytes, is not the hash.
    with pytest.raises(AuthError):
        check(urlencode({**fields, "hash": "é" * 64}, quote_via=quote))


def test_expired_and_future_init_data_are_refused() -> None:
    now = time.time()
    assert check(sign_init_data(TEST_TOKEN, webapp_user(OWNER), int(now) - DAY + 60)) == OWNER
    with pytest.raises(AuthError, match="expired"):
        check(sign_init_data(TEST_TOKEN, webapp_user(OWNER), int(now) - DAY - 60))
    with pytest.raises(AuthError, match="future"):
        check(sign_init_data(TEST_TOKEN, webapp_user(OWNER), int(now) + 3600))
    # A little clock skew is tolerated.
    assert check(sign_init_data(TEST_TOKEN, webapp_user(OWNER), int(now) + 10)) == OWNER


@pytest.mark.parametrize(
    "init_data",
    [
        "",
        "garbage",
        "%%%",
        "a=1&&b=2",
        "x" * 5000,
        "user=%7B%7D&auth_date=1",  # no hash
    ],
)
def test_malformed_init_data_is_refused(init_data: str) -> None:
    with pytest.raises(AuthError):
        check(init_data)


def test_well_signed_but_malformed_fields_are_refused() -> None:
    now = str(int(time.time()))
    for fields in (
        {"auth_date": now},  # no user
        {"auth_date": now, "user": "not json"},
        {"auth_date": now, "user": '{"id": "501"}'},  # id not a number
        {"auth_date": now, "user": '{"id": true}'},
        {"auth_date": "yesterday", "user": '{"id": 501}'},
        {"user": '{"id": 501}'},  # no auth_date
    ):
        with pytest.raises(AuthError):
            check(resign(fields))
    assert check(resign({"auth_date": now, "user": '{"id": 501}'})) == 501
    # A field given twice is not Telegram's.
    doubled = resign({"auth_date": now, "user": '{"id": 501}'}) + "&auth_date=" + now
    with pytest.raises(AuthError):
        check(doubled)


def test_track_tokens_name_their_mix_and_track_and_expire() -> None:
    now = time.time()
    token = track_token(TEST_TOKEN, "M" * 22, "drums", now, ttl_s=3600)
    assert track_token_valid(TEST_TOKEN, "M" * 22, "drums", token, now)
    assert not track_token_valid(TEST_TOKEN, "M" * 22, "bass", token, now)
    assert not track_token_valid(TEST_TOKEN, "N" * 22, "drums", token, now)
    assert not track_token_valid("999:other", "M" * 22, "drums", token, now)
    assert not track_token_valid(TEST_TOKEN, "M" * 22, "drums", token, now + 3601)
    expires, signature = token.split(".")
    later = f"{int(expires) + 3600}.{signature}"
    assert not track_token_valid(TEST_TOKEN, "M" * 22, "drums", later, now)
    for bad in ("", ".", "abc", f"{expires}.", "1e9.x", "é.é"):
        assert not track_token_valid(TEST_TOKEN, "M" * 22, "drums", bad, now)


async def test_the_api_answers_401_without_valid_init_data(
    base_url: str, mix: MixRecord, http: aiohttp.ClientSession
) -> None:
    url = f"{base_url}/api/mixes/{mix.mix_id}"
    expired = sign_init_data(TEST_TOKEN, webapp_user(OWNER), int(time.time()) - 2 * DAY)
    forged = sign_init_data("999:other-token", webapp_user(OWNER))
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "tma "},
        {"Authorization": "Bearer " + sign_init_data(TEST_TOKEN, webapp_user(OWNER))},
        {"Authorization": "tma " + expired},
        {"Authorization": "tma " + forged},
        {"Authorization": "tma garbage"},
    ):
        for method, target in (("GET", url), ("POST", url + "/render")):
            async with http.request(method, target, headers=headers, json={}) as response:
                assert response.status == 401, (method, headers)
                body = await response.json()
                assert set(body) == {"error"} and body["error"]
    async with http.get(url, headers=tma()) as response:
        assert response.status == 200


async def test_another_users_valid_init_data_gets_403_on_every_call(
    base_url: str,
    mix: MixRecord,
    http: aiohttp.ClientSession,
    fake_bot_api: FakeBotApi,
    settings: object,
    track_files: dict[str, object],
) -> None:
    url = f"{base_url}/api/mixes/{mix.mix_id}"
    async with http.get(url, headers=tma(STRANGER)) as response:
        assert response.status == 403
        assert "error" in await response.json()
    async with http.post(url + "/render", headers=tma(STRANGER), json={}) as response:
        assert response.status == 403
    # The stranger's own mix opens with the stranger's init data, and not the owner's:
    # init data is good for its user's mixes only, whichever mix it was opened for.
    theirs = await deliver_mix(
        fake_bot_api,
        settings,  # type: ignore[arg-type]
        {"vocals": track_files["vocals"]},  # type: ignore[dict-item]
        user_id=STRANGER,
    )
    stranger = tma(STRANGER)
    async with http.get(f"{base_url}/api/mixes/{theirs.mix_id}", headers=stranger) as response:
        assert response.status == 200
    async with http.get(f"{base_url}/api/mixes/{theirs.mix_id}", headers=tma()) as response:
        assert response.status == 403
    assert not fake_bot_api.audio_messages(OWNER)[len(mix.tracks) :], "nothing was rendered"
