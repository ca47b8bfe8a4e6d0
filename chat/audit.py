"""Audit: the count of invariant violations a server has seen, logged as they happen.

A correct server ends with zero. The classroom demos (`--unsafe-registry`) are there to make it
count: crashed operations, two clients holding one nickname, ghosts and lost members.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

log = logging.getLogger("chat.audit")


class Audit:
    """Violations by kind.

    Thread safety: `_lock` is a leaf lock (nothing else is taken while holding it, no logging
    under it) guarding `_counts`; any thread may `record()`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def record(self, kind: str, detail: str) -> None:
        with self._lock:
            self._counts[kind] += 1
        log.warning("VIOLATION (%s): %s", kind, detail)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def summary(self) -> str:
        counts = self.counts()
        if not counts:
            return "audit: 0 invariant violations"
        detail = ", ".join(f"{kind}: {n}" for kind, n in sorted(counts.items()))
        return f"audit: {sum(counts.values())} invariant violation(s) ({detail})"
