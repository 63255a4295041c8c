"""SQLite storage (aiosqlite): requests, selections, jobs, feedback; schema migrations."""

from storage.database import (
    ACTIVE_STATUSES,
    JOB_STATUSES,
    Database,
    JobRecord,
    JobStatus,
    NewRequest,
    Request,
    SchemaTooNewError,
    Stats,
    UserSettings,
    VariantCounts,
    Vote,
)
from storage.migrations import MIGRATIONS, SCHEMA_VERSION

__all__ = [
    "ACTIVE_STATUSES",
    "JOB_STATUSES",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Database",
    "JobRecord",
    "JobStatus",
    "NewRequest",
    "Request",
    "SchemaTooNewError",
    "Stats",
    "UserSettings",
    "VariantCounts",
    "Vote",
]
