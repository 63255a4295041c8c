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
)

SCHEMA_VERSION = len(MIGRATIONS)
