"""The Lua scripts of the Redis budget ledger and rate limiter. Each runs atomically in Redis, so
"check every budget, then hold on all of them" is one step for every replica at once. Time comes
from Redis' own clock (``TIME``), the same for every replica.

Per budget (keys under the tenant's hash tag, so one request's keys share a cluster slot):
``held`` hash reservation id → micro-dollars held, ``exp`` sorted set reservation id → expiry
(ms), ``heldsum`` the hash's total, and the spend counter: ``p:<period key>`` (a string) for a
calendar period, ``roll`` (a hash bucket index → micro-dollars, plus the field ``seeded``) for a
rolling window. Per reservation: ``r:<id>``, the marker that it was settled (with the spend
moves of that settlement, so a retried settle can finish its durable part) or released. Per
tenant: ``journal``, a hash reservation id → the settled ledger entry (encoded by the caller),
written by the same settle that moves the counters and deleted once the entry is in Postgres, so
a crash between the two loses nothing (``application.budgets.journal``).

A missing counter (never seeded, or lost with a Redis restart) makes reserve, settle and status
answer ``{-1, i...}`` before changing anything but expired holds; the caller seeds it from the
durable ledger and tries again.
"""

from __future__ import annotations

__all__ = ["ADJUST", "GCRA", "RELEASE", "RESERVE", "SEED_ROLLING", "SETTLE", "STATUS"]

_NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# purge(hk, ek, sk): drop holds whose expiry has passed.
# spent(ck, rolling, bucket, buckets): the counter's spend in its window, or nil when missing.
_HELPERS = """
local function purge(hk, ek, sk)
  local expired = redis.call('ZRANGEBYSCORE', ek, '-inf', now)
  for _, id in ipairs(expired) do
    local amount = redis.call('HGET', hk, id)
    if amount then
      redis.call('HDEL', hk, id)
      redis.call('DECRBY', sk, amount)
    end
    redis.call('ZREM', ek, id)
  end
end

local function spent(ck, rolling, bucket, buckets)
  if rolling == '1' then
    if redis.call('HEXISTS', ck, 'seeded') == 0 then return nil end
    local first = tonumber(bucket) - tonumber(buckets) + 1
    local total = 0
    local all = redis.call('HGETALL', ck)
    for j = 1, #all, 2 do
      local field = all[j]
      if field ~= 'seeded' then
        if tonumber(field) >= first then
          total = total + tonumber(all[j + 1])
        else
          redis.call('HDEL', ck, field)
        end
      end
    end
    return total
  end
  local value = redis.call('GET', ck)
  if value then return tonumber(value) end
  return nil
end
"""

RESERVE = (
    _NOW_MS
    + _HELPERS
    + """
-- KEYS: r:<id>, then per line: held, exp, heldsum, counter
-- ARGV: id, ttl_ms, keep_ms, n, then per line: limit, hard, amount, rolling, bucket, buckets
-- -> {1, soft lines over their limit...} | {0, first exceeded hard line} | {-1, missing lines...}
--    | {-2} (the id was settled or released already)
local rid, ttl, keep, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 1 then return {-2} end
local used, missing = {}, {}
for i = 1, n do
  local k, a = 1 + (i - 1) * 4, 4 + (i - 1) * 6
  purge(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3])
  if i == 1 and redis.call('HEXISTS', KEYS[k + 1], rid) == 1 then return {1} end
  local s = spent(KEYS[k + 4], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
  if s == nil then
    missing[#missing + 1] = i
  else
    used[i] = s + tonumber(redis.call('GET', KEYS[k + 3]) or '0')
  end
end
if #missing > 0 then
  table.insert(missing, 1, -1)
  return missing
end
for i = 1, n do
  local a = 4 + (i - 1) * 6
  if ARGV[a + 2] == '1' and used[i] + tonumber(ARGV[a + 3]) > tonumber(ARGV[a + 1]) then
    return {0, i}
  end
end
local out = {1}
for i = 1, n do
  local k, a = 1 + (i - 1) * 4, 4 + (i - 1) * 6
  redis.call('HSET', KEYS[k + 1], rid, ARGV[a + 3])
  redis.call('ZADD', KEYS[k + 2], now + ttl, rid)
  redis.call('INCRBY', KEYS[k + 3], ARGV[a + 3])
  for j = 1, 3 do redis.call('PEXPIRE', KEYS[k + j], keep) end
  if ARGV[a + 2] ~= '1' and used[i] + tonumber(ARGV[a + 3]) > tonumber(ARGV[a + 1]) then
    out[#out + 1] = i
  end
end
return out
"""
)

SETTLE = (
    _NOW_MS
    + _HELPERS
    + """
-- KEYS: r:<id>, then per line: held, exp, heldsum, counter; then the tenant's journal
-- ARGV: id, done_ms, actual, n, then per line: rolling, bucket, buckets, counter_ttl_ms; then the
--       journal entry ('' for none), written with the settlement
-- -> {1, before_1, after_1, ...} | {-1, missing lines...}
--    | {-2, before_1, after_1, ...} (settled before: the moves of that time) | {-3} (released before)
local rid, done_ms, actual, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local done = redis.call('GET', KEYS[1])
if done then
  if string.sub(done, 1, 1) ~= 's' then return {-3} end
  local out = {-2}
  for v in string.gmatch(string.sub(done, 3), '[^,]+') do out[#out + 1] = tonumber(v) end
  return out
end
local missing = {}
for i = 1, n do
  local k, a = 1 + (i - 1) * 4, 5 + (i - 1) * 4
  local ck = KEYS[k + 4]
  local present
  if ARGV[a] == '1' then present = redis.call('HEXISTS', ck, 'seeded') else present = redis.call('EXISTS', ck) end
  if present == 0 then missing[#missing + 1] = i end
end
if #missing > 0 then
  table.insert(missing, 1, -1)
  return missing
end
local out = {1}
for i = 1, n do
  local k, a = 1 + (i - 1) * 4, 5 + (i - 1) * 4
  local hk, ek, sk, ck = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local held = redis.call('HGET', hk, rid)
  if held then
    redis.call('HDEL', hk, rid)
    redis.call('DECRBY', sk, held)
  end
  redis.call('ZREM', ek, rid)
  local before = spent(ck, ARGV[a], ARGV[a + 1], ARGV[a + 2])
  if ARGV[a] == '1' then
    redis.call('HINCRBY', ck, ARGV[a + 1], actual)
  else
    redis.call('INCRBY', ck, actual)
  end
  redis.call('PEXPIRE', ck, ARGV[a + 3])
  out[#out + 1] = before
  out[#out + 1] = before + tonumber(actual)
end
local moves = {}
for j = 2, #out do moves[#moves + 1] = string.format('%.0f', out[j]) end
redis.call('SET', KEYS[1], 's:' .. table.concat(moves, ','), 'PX', done_ms)
local entry = ARGV[5 + n * 4]
if entry and entry ~= '' then redis.call('HSET', KEYS[2 + n * 4], rid, entry) end
return out
"""
)

RELEASE = """
-- KEYS: r:<id>, then per budget: held, exp, heldsum.  ARGV: id, done_ms, n.  -> 1 | 0 (done before)
local rid, done_ms, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 1, n do
  local k = 1 + (i - 1) * 3
  local held = redis.call('HGET', KEYS[k + 1], rid)
  if held then
    redis.call('HDEL', KEYS[k + 1], rid)
    redis.call('DECRBY', KEYS[k + 3], held)
  end
  redis.call('ZREM', KEYS[k + 2], rid)
end
redis.call('SET', KEYS[1], 'x', 'PX', done_ms)
return 1
"""

STATUS = (
    _NOW_MS
    + _HELPERS
    + """
-- KEYS: per line: held, exp, heldsum, counter.  ARGV: n, then per line: rolling, bucket, buckets
-- -> {1, spent_1, held_1, ...} | {-1, missing lines...}
local n = tonumber(ARGV[1])
local out, missing = {1}, {}
for i = 1, n do
  local k, a = (i - 1) * 4, 2 + (i - 1) * 3
  purge(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3])
  local s = spent(KEYS[k + 4], ARGV[a], ARGV[a + 1], ARGV[a + 2])
  if s == nil then missing[#missing + 1] = i end
  out[#out + 1] = s or 0
  out[#out + 1] = tonumber(redis.call('GET', KEYS[k + 3]) or '0')
end
if #missing > 0 then
  table.insert(missing, 1, -1)
  return missing
end
return out
"""
)

SEED_ROLLING = """
-- KEYS: roll.  ARGV: ttl_ms, then bucket, micros pairs.  Creates the counter unless it exists.
if redis.call('HEXISTS', KEYS[1], 'seeded') == 1 then return 0 end
redis.call('DEL', KEYS[1])
for j = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[j], ARGV[j + 1]) end
redis.call('HSET', KEYS[1], 'seeded', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

GCRA = """
-- KEYS: one per meter (its theoretical arrival time, microseconds).
-- ARGV: n, then per meter: interval_us, capacity_us, cost.
-- Charges every meter or none. -> per meter: allowed (1/0), remaining, reset_us, retry_us
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local n = tonumber(ARGV[1])
local tats, news, ok = {}, {}, true
for i = 1, n do
  local a = 2 + (i - 1) * 3
  local interval, capacity, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tats[i] = tat
  news[i] = tat + cost * interval
  if news[i] - capacity > now then ok = false end
end
local out = {}
for i = 1, n do
  local a = 2 + (i - 1) * 3
  local interval, capacity = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local own = news[i] - capacity <= now
  local tat = tats[i]
  if ok then
    tat = news[i]
    redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1)
  end
  local remaining = math.floor((capacity - (tat - now)) / interval + 1e-9)
  if remaining < 0 then remaining = 0 end
  local retry = 0
  if not own then retry = news[i] - capacity - now end
  out[#out + 1] = own and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = math.floor(tat - now)
  out[#out + 1] = math.ceil(retry)
end
return out
"""

ADJUST = """
-- KEYS: one per meter.  ARGV: n, then per meter: interval_us, cost (negative: give back).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local n = tonumber(ARGV[1])
for i = 1, n do
  local a = 2 + (i - 1) * 2
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tat = tat + tonumber(ARGV[a + 1]) * tonumber(ARGV[a])
  if tat > now then
    redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1)
  else
    redis.call('DEL', KEYS[i])
  end
end
return n
"""
