"""Finding a mix record: SQLite first (the bot stores each one for good), then Redis (the
worker's copy, there from the moment the Mix button is; it expires, SQLite's does not)."""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from common.mixes import MixRecord, redis_key
from storage import Database

logger = logging.getLogger(__name__)


class MixStore:
    """Read-only access to the mix records."""

    def __init__(self, db: Database | None, redis: Redis | None) -> None:
        self.db = db
        self.redis = redis

    async def get(self, mix_id: str) -> MixRecord | None:
        if self.db is not None:
            stored = await self.db.get_mix(mix_id)
            if stored is not None:
                return MixRecord.from_json(stored)
        if self.redis is not None:
            try:
                raw = await self.redis.get(redis_key(mix_id))
            except RedisError as exc:
                logger.warning("redis unreachable for a mix record: %s", exc)
                return None
            if raw is not None:
                return MixRecord.from_json(raw)
        return None
