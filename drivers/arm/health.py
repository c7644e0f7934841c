"""Bus health of one arm link: what happened to every reply the host waited for.

Counting only (no I/O): a transaction is one request that expects a reply (a sync read, a framed READ_STATE or
COMMAND). Its outcome is `ok`, `lost` (nothing arrived within the reply budget), `corrupt` (bytes arrived that do
not form a valid packet) or, found one transaction later, `late`: a reply counted lost whose bytes turned up after
the host gave up (flushed at the start of the next transaction, or a framed reply to an older sequence number).
`retried` counts attempts beyond the first within one control tick."""
from __future__ import annotations

import collections
from typing import Optional

MISS_KINDS = ("lost", "corrupt", "late")


class BusHealth:
    def __init__(self, window: int = 500):
        self.transactions = 0
        self.ok = 0
        self.counts = {k: 0 for k in MISS_KINDS}
        self.retried = 0
        self.miss_run = 0  # consecutive misses now
        self.longest_miss_run = 0
        self._recent = collections.deque(maxlen=int(window))  # True = miss, newest last
        self._last_outcome: Optional[str] = None

    def record_ok(self) -> None:
        self.transactions += 1
        self.ok += 1
        self.miss_run = 0
        self._recent.append(False)
        self._last_outcome = "ok"

    def record_miss(self, kind: str) -> None:
        if kind not in MISS_KINDS:
            raise ValueError(f"unknown miss kind {kind!r}; use one of {MISS_KINDS}")
        self.transactions += 1
        self.counts[kind] += 1
        self.miss_run += 1
        self.longest_miss_run = max(self.longest_miss_run, self.miss_run)
        self._recent.append(True)
        self._last_outcome = kind

    def record_late(self) -> None:
        """The last transaction's reply, counted lost, arrived after all: it was late, not lost."""
        if self._last_outcome == "lost" and self.counts["lost"] > 0:
            self.counts["lost"] -= 1
            self.counts["late"] += 1
            self._last_outcome = "late"

    def record_retry(self) -> None:
        self.retried += 1

    @property
    def misses(self) -> int:
        return sum(self.counts.values())

    def loss_rate(self) -> float:
        """Missed / all transactions over the whole run (0 when none)."""
        return self.misses / self.transactions if self.transactions else 0.0

    def recent_loss_rate(self) -> float:
        """Missed / transactions over the last `window` transactions."""
        return sum(self._recent) / len(self._recent) if self._recent else 0.0

    def as_dict(self) -> dict:
        return {"transactions": self.transactions, "ok": self.ok, **self.counts, "retried": self.retried,
                "longest_miss_run": self.longest_miss_run, "loss_rate": round(self.loss_rate(), 5),
                "recent_loss_rate": round(self.recent_loss_rate(), 5)}

    def describe(self) -> str:
        return (f"{self.misses} of {self.transactions} replies missed ({100 * self.loss_rate():.1f} %; last "
                f"{len(self._recent)}: {100 * self.recent_loss_rate():.1f} %): lost {self.counts['lost']}, corrupt "
                f"{self.counts['corrupt']}, late {self.counts['late']}, retried {self.retried}, longest run of "
                f"misses {self.longest_miss_run}")
