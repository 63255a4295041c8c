import pytest

from common import callback_data as cd


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (cd.toggle(12, "vocals"), cd.CallbackData(cd.Action.TOGGLE, 12, "vocals")),
        (cd.pick_all(3), cd.CallbackData(cd.Action.ALL, 3)),
        (cd.separate(99), cd.CallbackData(cd.Action.SEPARATE, 99)),
        (cd.vote(7, "down"), cd.CallbackData(cd.Action.VOTE, 7, "down")),
        (cd.setting(42, "format", "flac"), cd.CallbackData(cd.Action.SETTING, 42, "format.flac")),
        (cd.setting(42, "format", "mp3"), cd.CallbackData(cd.Action.SETTING, 42, "format.mp3")),
    ],
)
def test_round_trip(data: str, expected: cd.CallbackData) -> None:
    assert cd.parse(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        None,
        "",
        "x",
        "t:1",
        "t:1:kazoo",
        "t:abc:vocals",
        "s:1:extra",
        "a",
        "v:1:maybe",
        "t:-1:vocals",
        "s:" + "9" * 70,
        "t:1:vocals:x",
        "💥",
        "s:１",
        "o:42:format.ogg",
        "o:42:format",
        "o:42:format.flac:x",
        "o:42:formatxflac",
        "o:42:lang.en",
        "o::format.mp3",
    ],
)
def test_garbage_parses_to_none(data: str | None) -> None:
    assert cd.parse(data) is None


def test_largest_data_fits_64_bytes() -> None:
    biggest = cd.toggle(10**18 - 1, "drums")
    assert len(biggest.encode()) <= cd.MAX_BYTES
    assert cd.parse(biggest) == cd.CallbackData(cd.Action.TOGGLE, 10**18 - 1, "drums")


def test_a_settings_press_names_its_setting_and_value() -> None:
    assert cd.parse(cd.setting(7, "format", "flac")).setting == ("format", "flac")  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        cd.setting(7, "format", "wav")
    with pytest.raises(ValueError):
        cd.CallbackData(cd.Action.VOTE, 7, "up").setting  # noqa: B018
