"""Budgets and rate limits on Redis: the live reservation ledger and the GCRA limiter (Lua
scripts, atomic across replicas). The durable side is in ``adapters.postgres.budget_*``."""

from adapters.budgets.redis_ledger import LedgerUnavailable, RedisLiveLedger
from adapters.budgets.redis_limiter import RedisRateLimiter

__all__ = ["LedgerUnavailable", "RedisLiveLedger", "RedisRateLimiter"]
