import pytest

from common import callback_data as cd
from common.jobs import separation_job_id


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (cd.toggle(12, "vocals"), cd.CallbackData(cd.Action.TOGGLE, 12, "vocals")),
        (cd.pick_all(3), cd.CallbackData(cd.Action.ALL, 3)),
        (cd.separate(99), cd.CallbackData(cd.Action.SEPARATE, 99)),
        (cd.vote(7, "down"), cd.CallbackData(cd.Action.VOTE, 7, "down")),
        (cd.vote(7, "up", ["vocals"]), cd.CallbackData(cd.Action.VOTE, 7, "up", "4")),
        (
            cd.vote(7, "down", ["drums", "vocals"], "flac"),
            cd.CallbackData(cd.Action.VOTE, 7, "down", "5f"),
        ),
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
        "v:1:0:up",
        "v:1:64:up",
        "v:1:05:up",
        "v:1:5x:up",
        "v:1:5ff:up",
        "v:1:5m:up",
        "v:1:5:",
        "v:1::up",
        "v:1:5:up:x",
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


def test_a_rating_names_its_job_and_rebuilds_its_id() -> None:
    assert cd.vote(7, "up", ["vocals", "drums"]) == "v:7:5:up"
    assert cd.vote(7, "down", ["other"], "flac") == "v:7:32f:down"
    every = cd.vote(7, "up", cd.SOURCES, "flac")
    assert every == "v:7:63f:up"
    press = cd.parse(every)
    assert press is not None
    assert press.rated_job_id == separation_job_id(7, cd.SOURCES, "flac")
    assert cd.parse("v:7:5:up").rated_job_id == "sep:7:drums+vocals"  # type: ignore[union-attr]
    # A button from before ratings were per job names no job: the latest one is rated.
    assert cd.parse("v:7:up").rated_job_id is None  # type: ignore[union-attr]
    assert cd.parse(cd.toggle(7, "bass")).rated_job_id is None  # type: ignore[union-attr]


@pytest.mark.parametrize("fmt", ["mp3", "flac"])
def test_every_pick_round_trips_and_the_largest_rating_fits(fmt: str) -> None:
    for mask in range(1, 64):
        stems = tuple(s for bit, s in enumerate(cd.SOURCES) if mask & (1 << bit))
        assert cd.decode_pick(cd.encode_pick(stems, fmt)) == (stems, fmt)  # type: ignore[arg-type]
        data = cd.vote(10**18 - 1, "down", stems, fmt)  # type: ignore[arg-type]
        assert len(data.encode()) <= cd.MAX_BYTES
        parsed = cd.parse(data)
        assert parsed is not None
        assert parsed.rated_job_id == separation_job_id(10**18 - 1, stems, fmt)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cd.encode_pick([])
    with pytest.raises(ValueError):
        cd.encode_pick(["kazoo"])
