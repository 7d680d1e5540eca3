"""Leases in Redis: a key held by one holder with an expiry, renewed while it works (the single
beat, each host's event watcher). Each script is one round trip, so two holders never both
believe they hold it."""

from __future__ import annotations

# Taken if free, kept (expiry renewed) if ours: KEYS[1] the lease, ARGV[1] the holder, ARGV[2] ms.
HOLD = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
# Given up only if still ours (an expired lease someone else took stays theirs).
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
