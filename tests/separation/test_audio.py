"""Decoding any rate, channel count and format; refusing what is not audio; mp3 encoding."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from separation import (
    SAMPLERATE,
    InvalidAudioError,
    NoSoundError,
    SongTooLongError,
    decode_audio,
    encode_tracks,
    probe_audio,
)
from separation import audio as audio_module
from tests.support.audio import decode, make_song, music_like, write_audio

# Encoders may round the length to their frame size; gapless decoding keeps this small.
LENGTH_TOLERANCE = 0.03 * SAMPLERATE


@pytest.mark.parametrize(
    ("suffix", "samplerate", "channels"),
    [
        (".mp3", 44100, 2),
        (".mp3", 8000, 1),
        (".mp3", 22050, 2),
        (".mp3", 48000, 2),
        (".wav", 96000, 2),
        (".wav", 8000, 1),
        (".flac", 48000, 2),
        (".ogg", 48000, 2),
        (".m4a", 44100, 2),
        (".flac", 44100, 6),
        (".wav", 192000, 2),
        (".wav", 192000, 8),
        (".flac", 48000, 8),
        (".ogg", 48000, 1),
    ],
)
def test_decodes_any_rate_and_channel_count_to_44k1_stereo(
    tmp_path: Path, suffix: str, samplerate: int, channels: int
) -> None:
    seconds = 2.0
    path = make_song(tmp_path / f"in{suffix}", seconds, samplerate, channels)
    audio = decode_audio(path)
    assert audio.samples.dtype == np.float32
    assert audio.samples.shape[0] == 2
    assert abs(audio.samples.shape[1] - seconds * SAMPLERATE) <= LENGTH_TOLERANCE
    assert abs(audio.duration_s - seconds) <= 0.03
    assert audio.info.samplerate == samplerate
    assert audio.info.channels == channels
    # Not silence: the tones survived resampling and downmixing.
    assert np.sqrt(np.mean(audio.samples**2)) > 0.05


def test_mono_is_duplicated_exactly(tmp_path: Path) -> None:
    path = make_song(tmp_path / "mono.wav", 1.0, 8000, 1)
    samples = decode_audio(path).samples
    np.testing.assert_array_equal(samples[0], samples[1])


def test_stereo_channels_stay_apart(tmp_path: Path) -> None:
    left_only = np.zeros((2, 44100), np.float32)
    left_only[0] = music_like(1.0, channels=1)[0]
    path = write_audio(tmp_path / "left.wav", left_only, 44100)
    samples = decode_audio(path).samples
    assert np.abs(samples[1]).max() == 0.0
    np.testing.assert_allclose(samples[0], left_only[0], atol=1e-4)


# ffmpeg's 7.1 to stereo matrix (ITU-R BS.775): gains of one channel into (left, right).
SEVEN_ONE_DOWNMIX = {
    "FL": (1.0, 0.0),
    "FR": (0.0, 1.0),
    "FC": (0.7071, 0.7071),
    "LFE": (0.0, 0.0),
    "BL": (0.7071, 0.0),
    "BR": (0.0, 0.7071),
    "SL": (0.7071, 0.0),
    "SR": (0.0, 0.7071),
}


@pytest.mark.parametrize("channel", list(SEVEN_ONE_DOWNMIX))
def test_7_1_downmix_keeps_every_channel_but_the_lfe(tmp_path: Path, channel: str) -> None:
    """A signal in one channel only arrives at these gains: surrounds fold into their side,
    the centre into both, and the LFE is left out (a file with sound only there decodes
    to silence)."""
    tone = music_like(1.0, channels=1)[0]
    surround = np.zeros((8, tone.size), np.float32)
    surround[list(SEVEN_ONE_DOWNMIX).index(channel)] = tone
    samples = decode_audio(write_audio(tmp_path / "7.1.wav", surround, 44100)).samples
    gains = samples @ tone / np.dot(tone, tone)
    np.testing.assert_allclose(gains, SEVEN_ONE_DOWNMIX[channel], atol=1e-3)


def test_a_loud_downmix_is_not_normalised_or_clipped(tmp_path: Path) -> None:
    tone = music_like(1.0, channels=1)[0]
    samples = decode_audio(write_audio(tmp_path / "7.1.wav", np.tile(tone, (8, 1)), 44100)).samples
    # 1 + 0.7071 * 3 per side: the 0.9 peak of each channel sums to 2.8, kept as float.
    np.testing.assert_allclose(samples, np.tile(tone * 3.1213, (2, 1)), atol=1e-3)
    assert np.abs(samples).max() > 2.8


def test_float_wav_above_full_scale_decodes_unclipped(tmp_path: Path) -> None:
    hot = music_like(1.0) * np.float32(2.0 / 0.9)  # peaks at +6 dBFS
    path = write_audio(tmp_path / "hot.wav", hot, 44100, codec="pcm_f32le")
    assert probe_audio(path).codec == "pcm_f32le"
    np.testing.assert_array_equal(decode_audio(path).samples, hot)


def test_24_bit_wav_decodes_to_its_resolution(tmp_path: Path) -> None:
    original = music_like(1.0)
    path = write_audio(tmp_path / "24.wav", original, 44100, codec="pcm_s24le")
    assert probe_audio(path).codec == "pcm_s24le"
    np.testing.assert_allclose(decode_audio(path).samples, original, rtol=0, atol=2**-23)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_a_one_sample_file_decodes_to_one_sample(tmp_path: Path, suffix: str) -> None:
    one = np.array([[0.5], [-0.25]], np.float32)
    samples = decode_audio(write_audio(tmp_path / f"one{suffix}", one, 44100)).samples
    np.testing.assert_allclose(samples, one, atol=1 / 32768)


@pytest.mark.parametrize(
    ("suffix", "samplerate", "channels"), [(".ogg", 48000, 1), (".wav", 8000, 2)]
)
def test_a_file_too_short_to_resample_holds_no_audio(
    tmp_path: Path, suffix: str, samplerate: int, channels: int
) -> None:
    """ffmpeg's resampler emits nothing for a few dozen samples: a one-sample file at
    another rate than 44.1 kHz is refused as holding no sound, not as unreadable."""
    one = np.full((channels, 1), 0.5, np.float32)
    path = write_audio(tmp_path / f"one{suffix}", one, samplerate)
    with pytest.raises(NoSoundError):
        decode_audio(path)


def test_wav_at_44k1_decodes_sample_exact(tmp_path: Path) -> None:
    original = music_like(1.5)
    path = write_audio(tmp_path / "exact.wav", original, 44100)
    samples = decode_audio(path).samples
    assert samples.shape == original.shape
    np.testing.assert_allclose(samples, original, atol=1 / 32768 + 1e-6)


def test_tags_are_read(song: Path) -> None:
    info = probe_audio(song)
    assert (info.title, info.artist, info.codec) == ("Test Song", "Test Artist", "mp3")
    assert info.duration_s == pytest.approx(3.0, abs=0.06)


def test_music_excerpt_decodes(multitrack_song: Path, tmp_path: Path) -> None:
    stem_file = multitrack_song
    audio = decode_audio(stem_file)
    assert 5.0 < audio.duration_s < 9.0
    # Re-encoded to mp3 as a user would send it, it decodes to the same length.
    mp3 = tmp_path / "excerpt.mp3"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(stem_file),
            "-map",
            "0:0",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "192k",
            str(mp3),
        ],
        check=True,
    )
    again = decode_audio(mp3)
    assert abs(again.samples.shape[1] - audio.samples.shape[1]) <= LENGTH_TOLERANCE


def test_vbr_mp3_without_header_is_not_mistaken_for_truncated(tmp_path: Path) -> None:
    """Without a Xing header ffprobe guesses an mp3's duration from its first frames'
    bitrate; a quiet start makes that guess far too long."""
    path = tmp_path / "vbr.mp3"
    source = "aevalsrc=if(lt(t\\,3)\\,0\\,0.3*sin(2*PI*440*t)+0.2*(random(0)-0.5)):s=44100:d=8"
    subprocess.run(
        [
            *("ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", source, "-ac", "2"),
            *("-c:a", "libmp3lame", "-q:a", "2", "-write_xing", "0", str(path)),
        ],
        check=True,
    )
    info = probe_audio(path)
    assert info.duration_estimated
    audio = decode_audio(path)
    assert audio.duration_s == pytest.approx(8.0, abs=0.06)


def test_very_short_audio_and_silence_decode(tmp_path: Path) -> None:
    short = decode_audio(make_song(tmp_path / "short.wav", 0.2))
    assert short.samples.shape == (2, round(0.2 * SAMPLERATE))
    silent = write_audio(tmp_path / "silent.flac", np.zeros((2, 44100), np.float32), 44100)
    assert np.abs(decode_audio(silent).samples).max() == 0.0


def _png(path: Path) -> Path:
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=32x32",
            "-frames:v",
            "1",
            str(path),
        ],
        check=True,
    )
    return path


def _truncated(song: Path, path: Path, keep: float) -> Path:
    raw = song.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


BAD_INPUTS = {
    "text renamed .mp3": lambda d, song: _write(d / "text.mp3", b"hello, this is no song\n" * 50),
    "zero bytes": lambda d, song: _write(d / "empty.mp3", b""),
    "random bytes": lambda d, song: _write(d / "noise.mp3", np.random.default_rng(0).bytes(20000)),
    "png image": lambda d, song: _png(d / "cover.png"),
    "png renamed .mp3": lambda d, song: _write(d / "cover.mp3", _png(d / "c.png").read_bytes()),
    "truncated mp3 (half)": lambda d, song: _truncated(song, d / "half.mp3", 0.5),
    "truncated mp3 (header only)": lambda d, song: _truncated(song, d / "head.mp3", 0.005),
    "missing file": lambda d, song: d / "nothing-here.mp3",
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_raises_invalid_audio_with_a_user_message(
    kind: str, tmp_path: Path, song: Path
) -> None:
    path = BAD_INPUTS[kind](tmp_path, song)
    with pytest.raises(InvalidAudioError) as caught:
        decode_audio(path)
    message = caught.value.user_message
    assert "mp3" in message
    assert "wav" in message and "flac" in message
    assert str(tmp_path) not in message


def test_zero_length_wav_is_invalid(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "nothing.wav", np.zeros((2, 0), np.float32), 44100)
    with pytest.raises(NoSoundError) as refused:
        decode_audio(path)
    assert "mp3" in refused.value.user_message


def _lag(reference: np.ndarray, other: np.ndarray, max_lag: int = 3000) -> int:
    """The shift of ``other`` against ``reference`` that correlates best."""
    window = reference[max_lag:-max_lag]
    scores = [
        float(np.dot(window, other[max_lag + lag : len(other) - max_lag + lag]))
        for lag in range(-max_lag, max_lag + 1)
    ]
    return int(np.argmax(scores)) - max_lag


def _tonal(n: int) -> np.ndarray:
    """Amplitude-modulated tones: mp3 keeps them well, so any misalignment shows."""
    t = np.arange(n) / SAMPLERATE
    left = 0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 1.3 * t)
    right = 0.2 * np.sin(2 * np.pi * 3000 * t + 1) + 0.1 * np.sin(2 * np.pi * 97 * t)
    return np.stack([left, right]).astype(np.float32)


# Lengths by their remainder r modulo the mp3 frame size (1152): left to itself, ffmpeg 5.1
# writes a LAME tag whose padding is 47 - r short for r in 1..46; encode_tracks corrects it.
@pytest.mark.parametrize("n", [88_211, 87_553, 87_598, 87_552], ids=["r659", "r1", "r46", "r0"])
def test_encoded_tracks_keep_length_and_alignment(tmp_path: Path, n: int) -> None:
    tracks = {"vocals": music_like(2.1, seed=3)[:, :n], "no_vocals": _tonal(n)}
    paths = encode_tracks(tracks, tmp_path, "Song", artist="Someone")
    assert [p.name for p in paths] == ["Song - vocals.mp3", "Song - no_vocals.mp3"]
    decoded = {track: decode(path) for track, path in zip(tracks, paths, strict=True)}
    for track, samples in tracks.items():
        assert decoded[track].shape == samples.shape == (2, n)
    # The noise bursts of the music-like track make the correlation peak unambiguous.
    assert _lag(tracks["vocals"][0], decoded["vocals"][0]) == 0
    # One sample of offset at 3 kHz would cap this near 17 dB.
    error = decoded["no_vocals"] - tracks["no_vocals"]
    snr_db = 10 * np.log10(np.sum(tracks["no_vocals"] ** 2) / np.sum(error**2))
    assert snr_db > 40


@pytest.mark.parametrize(
    "n", [1, 2, 10, 46, 47, 48, 100, 600, 1151, 1152, 1153, 1198, 1199, 1200, 3466, 4052]
)
def test_an_mp3_plays_exactly_its_samples_at_their_place(tmp_path: Path, n: int) -> None:
    """Any length, those with n % 1152 in 1..46 included, decodes to n samples, and a click
    comes back at its sample (one near the start on the left, one near the end on the right)."""
    clicks = (n // 3, n - 1 - n // 4)
    track = np.zeros((2, n), np.float32)
    track[0, clicks[0]] = track[1, clicks[1]] = 0.8
    (path,) = encode_tracks({"vocals": track}, tmp_path, "Clicks")
    decoded = decode(path)
    assert decoded.shape == (2, n)
    assert [int(np.argmax(channel)) for channel in decoded] == list(clicks)


@pytest.mark.parametrize("gain", [1.0, 6.6], ids=["-10dBFS", "+6dBFS"])
def test_mp3_keeps_peaks_above_full_scale(tmp_path: Path, gain: float) -> None:
    """LAME is fed float and ffmpeg decodes mp3 to float: a track peaking at +6 dBFS comes
    back peaking there, at the same coding error as a quiet one (nothing clips)."""
    track = _tonal(SAMPLERATE) * np.float32(gain)
    (path,) = encode_tracks({"vocals": track}, tmp_path, "Hot")
    decoded = decode(path)
    assert decoded.shape == track.shape
    peak = float(np.abs(track).max())
    assert float(np.abs(decoded).max()) == pytest.approx(peak, rel=0.01)
    error = decoded - track
    snr_db = 10 * np.log10(np.sum(track**2) / np.sum(error**2))
    assert snr_db > 40


def test_encoded_tracks_are_320k_mp3_with_tags(tmp_path: Path) -> None:
    (path,) = encode_tracks({"drums": music_like(1.0)}, tmp_path, "My Song", artist="Band")
    probe = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
            capture_output=True,
            check=True,
        ).stdout
    )
    stream = probe["streams"][0]
    assert stream["codec_name"] == "mp3"
    assert int(stream["bit_rate"]) == 320_000
    assert int(stream["sample_rate"]) == 44100 and stream["channels"] == 2
    info = probe_audio(path)
    assert (info.title, info.artist) == ("My Song (drums)", "Band")


def test_encoding_without_artist_writes_no_artist(tmp_path: Path) -> None:
    (path,) = encode_tracks({"bass": music_like(0.5)}, tmp_path / "new" / "dir", "S")
    assert probe_audio(path).artist is None
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_encoding_refuses_a_mono_array(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        encode_tracks({"bass": np.zeros((1, 100), np.float32)}, tmp_path, "S")


def _snr_db(reference: np.ndarray, error: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / max(float(np.sum(error**2)), 1e-30)))


def _s32_samples(path: Path) -> np.ndarray:
    """``path`` decoded to signed 32-bit integers, as stored (no float conversion)."""
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "s32le", "pipe:1"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype="<i4")


@pytest.mark.parametrize("n", [88_211, 1, 1153])
def test_flac_tracks_are_24_bit_aligned_and_sum_to_the_mix(tmp_path: Path, n: int) -> None:
    mix = music_like(2.1, seed=5)[:, :n]
    vocals = _tonal(mix.shape[1]) * np.float32(0.5)
    tracks = {"vocals": vocals, "no_vocals": mix - vocals}
    paths = encode_tracks(tracks, tmp_path, "Song", artist="Someone", fmt="flac")
    assert [p.name for p in paths] == ["Song - vocals.flac", "Song - no_vocals.flac"]
    probe = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(paths[0])],
            capture_output=True,
            check=True,
        ).stdout
    )
    stream = probe["streams"][0]
    assert stream["codec_name"] == "flac"
    assert stream["bits_per_raw_sample"] == "24" and stream["sample_fmt"] == "s32"
    assert int(stream["sample_rate"]) == 44100 and stream["channels"] == 2
    info = probe_audio(paths[0])
    assert (info.title, info.artist) == ("Song (vocals)", "Someone")
    # 24 bits: the low byte of every 32-bit sample is zero, the next one is used.
    stored = _s32_samples(paths[1])
    assert not np.any(stored & 0xFF)
    if n > 1000:
        assert np.any(stored & 0xFF00)
    decoded = {track: decode(path) for track, path in zip(tracks, paths, strict=True)}
    for track, samples in tracks.items():
        assert decoded[track].shape == samples.shape == (2, n), "sample-aligned, same length"
        assert _snr_db(samples, decoded[track] - samples) > 100
    if n > 10_000:
        assert _lag(tracks["no_vocals"][0], decoded["no_vocals"][0]) == 0
    total = decoded["vocals"] + decoded["no_vocals"]
    assert _snr_db(mix, total - mix) >= 100, "far above the 60 dB the design asks"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_flac_clips_samples_above_full_scale(tmp_path: Path) -> None:
    """24-bit FLAC is integer: a track peaking at +6 dBFS comes back clipped at full scale
    (mp3 would keep the peak, see above)."""
    track = _tonal(SAMPLERATE) * np.float32(6.6)
    (path,) = encode_tracks({"vocals": track}, tmp_path, "Hot", fmt="flac")
    decoded = decode(path)
    assert decoded.shape == track.shape
    assert float(np.abs(decoded).max()) <= 1.0
    within = np.abs(track) < 0.99
    assert np.allclose(decoded[within], track[within], atol=1e-6)


def test_encoding_refuses_an_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        encode_tracks({"bass": music_like(0.1)}, tmp_path, "S", fmt="ogg")  # type: ignore[arg-type]


def _silence_flac(path: Path, seconds: float) -> Path:
    # Minutes of silence in a few kB: the length is only found by decoding.
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi"]
    cmd += ["-i", "anullsrc=r=44100:cl=stereo", "-t", str(seconds), "-c:a", "flac", str(path)]
    subprocess.run(cmd, check=True)
    return path


def test_decoding_stops_a_second_past_the_duration_limit(tmp_path: Path) -> None:
    bomb = _silence_flac(tmp_path / "bomb.flac", 600)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(SongTooLongError) as refused:
        decode_audio(bomb, max_duration_s=5)
    assert refused.value.limit_s == 5
    assert "5 s" in refused.value.user_message


def test_a_song_within_the_limit_decodes_whole(tmp_path: Path) -> None:
    song = _silence_flac(tmp_path / "short.flac", 4)
    audio = decode_audio(song, max_duration_s=5)
    assert audio.samples.shape == (2, 4 * SAMPLERATE)
    assert decode_audio(song, max_duration_s=4).samples.shape == (2, 4 * SAMPLERATE)


def test_a_decode_past_its_time_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    song = _silence_flac(tmp_path / "slow.flac", 60)
    info = probe_audio(song)
    monkeypatch.setattr(audio_module, "DECODE_TIMEOUT_BASE_S", 0.0)
    monkeypatch.setattr(audio_module, "DECODE_TIMEOUT_PER_AUDIO_S", 1e-6)
    with pytest.raises(InvalidAudioError, match="ran past"):
        decode_audio(song, info)


@pytest.mark.parametrize("n", [88_211, 1])
def test_wav_tracks_are_the_float_samples_bit_for_bit(tmp_path: Path, n: int) -> None:
    """32-bit float WAV: aligned, the song's length, nothing quantised or clipped (a track
    peaking at +10 dBFS keeps its peaks), so the decoded tracks sum to the mix."""
    mix = music_like(2.1, seed=5)[:, :n]
    vocals = _tonal(mix.shape[1]) * np.float32(10.0)
    tracks = {"vocals": vocals, "no_vocals": mix - vocals}
    paths = encode_tracks(tracks, tmp_path, "Song", artist="Someone", fmt="wav")
    assert [p.name for p in paths] == ["Song - vocals.wav", "Song - no_vocals.wav"]
    info = probe_audio(paths[0])
    assert (info.codec, info.samplerate, info.channels) == ("pcm_f32le", 44100, 2)
    assert (info.title, info.artist) == ("Song (vocals)", "Someone")
    decoded = {track: decode(path) for track, path in zip(tracks, paths, strict=True)}
    for track, samples in tracks.items():
        np.testing.assert_array_equal(decoded[track], samples, err_msg=track)
    if n > 1:
        assert float(np.abs(decoded["vocals"]).max()) > 2.0
    np.testing.assert_allclose(decoded["vocals"] + decoded["no_vocals"], mix, atol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
