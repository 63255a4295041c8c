"""Schema migrations, applied in order; ``PRAGMA user_version`` records how many ran.

Append new migrations at the end; never edit one that has shipped.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: requests (one per song sent), pickers' selections, jobs, votes.
    """
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        chat_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        message_id INTEGER NOT NULL,
        picker_message_id INTEGER,
        file_id TEXT NOT NULL,
        file_unique_id TEXT,
        file_size INTEGER,
        mime_type TEXT,
        kind TEXT NOT NULL,
        song_name TEXT NOT NULL,
        artist TEXT,
        duration_s REAL,
        created_at REAL NOT NULL
    );
    CREATE INDEX requests_user ON requests (user_id);

    CREATE TABLE selections (
        request_id INTEGER NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
        source TEXT NOT NULL,
        PRIMARY KEY (request_id, source)
    );

    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        request_id INTEGER NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
        chat_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        stems TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
        status_message_id INTEGER,
        queue_position INTEGER,
        tracks TEXT,
        error TEXT,
        audio_seconds REAL,
        timings TEXT,
        queued_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX jobs_status ON jobs (status);
    CREATE INDEX jobs_user_status ON jobs (user_id, status);
    CREATE INDEX jobs_request ON jobs (request_id);

    CREATE TABLE feedback (
        request_id INTEGER NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL,
        vote TEXT NOT NULL CHECK (vote IN ('up', 'down')),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (request_id, user_id)
    );
    """,
    # 2: what was wrong after a 👎: the question the bot asked, and the answers.
    """
    CREATE TABLE feedback_prompts (
        chat_id INTEGER NOT NULL,
        message_id INTEGER NOT NULL,
        request_id INTEGER NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (chat_id, message_id)
    );

    CREATE TABLE feedback_comments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id INTEGER NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL,
        text TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX feedback_comments_request ON feedback_comments (request_id);
    """,
    # 3: each user's /settings (a row once they change one; a new setting is a new column),
    # and the format each job was asked for.
    """
    CREATE TABLE user_settings (
        user_id INTEGER PRIMARY KEY,
        output_format TEXT NOT NULL DEFAULT 'mp3',
        updated_at REAL NOT NULL
    );

    ALTER TABLE jobs ADD COLUMN output_format TEXT NOT NULL DEFAULT 'mp3';
    """,
    # 4: the language a user chose in /settings (NULL: follow their Telegram language), and
    # the language each job speaks (the bot's own edits of its status message use it).
    """
    ALTER TABLE user_settings ADD COLUMN language TEXT;

    ALTER TABLE jobs ADD COLUMN language TEXT NOT NULL DEFAULT 'en';
    """,
    # 5: experiments, and ratings per job. Each job records the experiment and variant it
    # separated with (NULL: none ran). A vote belongs to one delivered set of tracks (a job),
    # so a re-pick of the same song is rated on its own; the request stays for joins. Each
    # old vote, 👎 question and comment moves to its request's latest job, a done one first
    # (the tracks its rating message followed); a vote on a request without any job (which
    # no button could cast) has nothing to rate and is dropped.
    """
    ALTER TABLE jobs ADD COLUMN experiment TEXT;
    ALTER TABLE jobs ADD COLUMN variant TEXT;
    CREATE INDEX jobs_experiment ON jobs (experiment, variant);

    CREATE TABLE feedback_per_job (
        job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
        request_id INTEGER NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL,
        vote TEXT NOT NULL CHECK (vote IN ('up', 'down')),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (job_id, user_id)
    );
    INSERT INTO feedback_per_job (job_id, request_id, user_id, vote, created_at, updated_at)
    SELECT job_id, request_id, user_id, vote, created_at, updated_at FROM (
        SELECT (
            SELECT j.job_id FROM jobs AS j WHERE j.request_id = f.request_id
            ORDER BY j.status = 'done' DESC, j.queued_at DESC, j.rowid DESC LIMIT 1
        ) AS job_id, f.request_id, f.user_id, f.vote, f.created_at, f.updated_at
        FROM feedback AS f
    ) WHERE job_id IS NOT NULL;
    DROP TABLE feedback;
    ALTER TABLE feedback_per_job RENAME TO feedback;
    CREATE INDEX feedback_request ON feedback (request_id);

    ALTER TABLE feedback_prompts ADD COLUMN job_id TEXT REFERENCES jobs (job_id) ON DELETE CASCADE;
    UPDATE feedback_prompts SET job_id = (
        SELECT j.job_id FROM jobs AS j WHERE j.request_id = feedback_prompts.request_id
        ORDER BY j.status = 'done' DESC, j.queued_at DESC, j.rowid DESC LIMIT 1
    );

    ALTER TABLE feedback_comments ADD COLUMN job_id TEXT REFERENCES jobs (job_id) ON DELETE CASCADE;
    UPDATE feedback_comments SET job_id = (
        SELECT j.job_id FROM jobs AS j WHERE j.request_id = feedback_comments.request_id
        ORDER BY j.status = 'done' DESC, j.queued_at DESC, j.rowid DESC LIMIT 1
    );
    CREATE INDEX feedback_comments_job ON feedback_comments (job_id);
    """,
    # 6: the mixer's records, one per delivered set of tracks (common/mixes.py): the JSON
    # record as the worker wrote it, and the columns it is found and owned by.
    """
    CREATE TABLE mixes (
        mix_id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL,
        user_id INTEGER NOT NULL,
        chat_id INTEGER NOT NULL,
        record TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX mixes_job ON mixes (job_id);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
