"""Per-client flood control: a token bucket, pure (the caller passes the clock's reading)."""

from __future__ import annotations

from enum import Enum


class Verdict(Enum):
    ACCEPT = "accept"
    WARN = "warn"  # first line over the limit: dropped, the client is told
    DROP = "drop"  # over the limit again: dropped silently
    KICK = "kick"  # a whole burst dropped before the bucket refilled: disconnect


class FloodGate:
    """Lets `rate` lines a second through on average, `burst` at once.

    Lines over the limit are dropped. The first drop warns; dropping more than `burst` lines
    before the bucket is full again means a script, not a person, and the client is kicked.
    `rate <= 0` turns flood control off.
    """

    __slots__ = ("_burst", "_dropped", "_rate", "_stamp", "_tokens")  # one per client (#14)

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = max(1, burst)
        self._tokens = float(self._burst)
        self._stamp = now
        self._dropped = 0

    def check(self, now: float) -> Verdict:
        if self._rate <= 0:
            return Verdict.ACCEPT
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(float(self._burst), self._tokens + elapsed * self._rate)
        if self._tokens >= self._burst:
            self._dropped = 0
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Verdict.ACCEPT
        self._dropped += 1
        if self._dropped == 1:
            return Verdict.WARN
        if self._dropped > self._burst:
            return Verdict.KICK
        return Verdict.DROP
