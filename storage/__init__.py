"""SQLite storage (aiosqlite): requests, selections, jobs, feedback; schema migrations."""
