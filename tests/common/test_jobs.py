"""The job payload and id across formats: mp3 ids and old payloads stay as they were."""

from __future__ import annotations

from common.jobs import SeparationJob, separation_job_id

OLD_PAYLOAD = {
    "request_id": 7,
    "chat_id": 70,
    "user_id": 700,
    "file_id": "F",
    "song_name": "Song",
    "stems": ["vocals", "drums"],
    "status_message_id": 9,
}


def test_mp3_job_ids_are_unchanged_and_flac_is_another_job() -> None:
    assert separation_job_id(7, ["vocals", "drums"]) == "sep:7:drums+vocals"
    assert separation_job_id(7, ["vocals", "drums"], "mp3") == "sep:7:drums+vocals"
    assert separation_job_id(7, ["drums", "vocals"], "flac") == "sep:7:drums+vocals:flac"


def test_a_payload_from_before_formats_loads_as_mp3() -> None:
    job = SeparationJob.from_kwargs(OLD_PAYLOAD)
    assert job.output_format == "mp3"
    assert job.job_id == "sep:7:drums+vocals"


def test_the_format_travels_in_the_payload() -> None:
    job = SeparationJob.from_kwargs({**OLD_PAYLOAD, "output_format": "flac"})
    assert job.output_format == "flac" and job.job_id == "sep:7:drums+vocals:flac"
    assert SeparationJob.from_kwargs(job.to_kwargs()) == job
    # A format this worker does not know (a newer bot) is served as the default.
    assert SeparationJob.from_kwargs({**OLD_PAYLOAD, "output_format": "ogg"}).output_format == "mp3"
