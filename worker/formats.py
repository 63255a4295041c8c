"""The tracks in the job's output format, each within the upload limit in use.

A FLAC track is several times its mp3: a long song's FLAC can be over what a bot may send
(50 MB on the public Bot API, :func:`common.telegram.upload_limit_bytes`). Such a track is
encoded again as mp3 and sent that way, and the job's ledger records which tracks were, so
the final status says so (also when a re-run finds them delivered); nothing fails for size.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from separation import Track, encode_tracks
from separation.formats import OutputFormat

logger = logging.getLogger(__name__)

# The ledger field listing the tracks sent as mp3 instead of the job's format.
AS_MP3 = "as_mp3"


@dataclass(frozen=True)
class EncodedTracks:
    """Track name -> file to send, in the tracks' order, and the tracks sent as mp3 though
    the job asked for another format."""

    files: dict[str, Path]
    as_mp3: tuple[str, ...] = ()


def encode_for_upload(
    tracks: Mapping[str, Track],
    out_dir: Path,
    song_name: str,
    *,
    artist: str | None,
    output_format: OutputFormat,
    limit_bytes: int,
) -> EncodedTracks:
    """Encode ``tracks`` in ``output_format``; a file over ``limit_bytes`` is replaced by the
    track's mp3 (320 kbps), unless it is the mp3 already."""
    paths = encode_tracks(tracks, out_dir, song_name, artist=artist, fmt=output_format)
    files = dict(zip(tracks, paths, strict=True))
    if output_format == "mp3":
        return EncodedTracks(files)
    too_big = [track for track, path in files.items() if path.stat().st_size > limit_bytes]
    if not too_big:
        return EncodedTracks(files)
    logger.info(
        "over the upload limit as %s, sent as mp3: %s",
        output_format,
        ",".join(too_big),
        extra={"limit_bytes": limit_bytes},
    )
    mp3s = encode_tracks(
        {track: tracks[track] for track in too_big}, out_dir, song_name, artist=artist, fmt="mp3"
    )
    for track, mp3 in zip(too_big, mp3s, strict=True):
        files[track].unlink(missing_ok=True)
        files[track] = mp3
    return EncodedTracks(files, tuple(too_big))


def sent_as_mp3(ledger: Mapping[str, str]) -> tuple[str, ...]:
    """The tracks a job's ledger records as sent as mp3 instead of its format."""
    return tuple(track for track in ledger.get(AS_MP3, "").split(",") if track)
