"""The run-wide source limiter as a Ray actor, and the throttle chunk processes talk to it with.

One `SourceLimiterActor` per run (named `source-limiter-<run_id>` in the driver's namespace)
wraps `jobs.limits.RateLimiter`. `acquire` waits inside the actor and is woken the
moment another chunk releases a slot, so a one-in-flight source is not left idle between
requests by polling. Leases expire after the request timeout, and the driver frees every lease of
a chunk attempt that ended badly, so a killed chunk never keeps a slot.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ray

from jobs.limits import RateLimiter, SourceLimits

LIMITER_PREFIX = "source-limiter-"


def lease_holder(task_id: str, attempt: int) -> str:
    """Who holds a limiter lease: one task attempt."""
    return f"{task_id}#{attempt}"


@ray.remote(num_cpus=0, max_concurrency=1000)
class SourceLimiterActor:
    """Grants leases under the run's source limits to every chunk process of the run."""

    def __init__(self, limits: dict, lease_ttl_s: float):
        self._limiter = RateLimiter(SourceLimits(**limits), lease_ttl_s=lease_ttl_s)
        self._released = asyncio.Event()

    async def acquire(self, holder: str, weight: float) -> int:
        while True:
            grant = self._limiter.try_acquire(holder, weight)
            if grant.lease_id is not None:
                return grant.lease_id
            released = self._released
            try:
                await asyncio.wait_for(released.wait(), timeout=grant.wait_s)
            except asyncio.TimeoutError:
                pass

    async def release(self, lease_id: int, status: int | None = None) -> bool:
        freed = self._limiter.release(lease_id, status)
        self._wake()
        return freed

    async def release_holder(self, holder: str) -> int:
        freed = self._limiter.release_holder(holder)
        self._wake()
        return freed

    async def snapshot(self) -> dict:
        return self._limiter.snapshot()

    def _wake(self) -> None:
        # Every waiter re-checks; the next release gets a fresh event to wait on.
        released, self._released = self._released, asyncio.Event()
        released.set()


def start_limiter(run_id: str, limits: SourceLimits, lease_ttl_s: float):
    """The run's limiter actor (in the caller's Ray namespace) and its name."""
    name = f"{LIMITER_PREFIX}{run_id}"
    actor = SourceLimiterActor.options(name=name, lifetime="non_detached").remote(limits.to_json(), lease_ttl_s)
    ray.get(actor.snapshot.remote())  # up and answering before any chunk asks
    return actor, name


class QueueClock:
    """The time a chunk is held up by the source limiter alone: some request of it waits for a
    lease while none holds one (its fetch threads have nothing to do but wait).

    A chunk's timeout counts its own work, not this: the chunk process writes the clock to a file
    on every change (`path`), its supervisor reads it (`queued_seconds`). `now` is injectable for tests.
    """

    def __init__(self, path: Path | None = None, now: Callable[[], float] = time.time):
        self.path, self.now = path, now
        self._lock = threading.Lock()
        self._waiting = self._holding = 0
        self._since: float | None = None  # epoch seconds the current hold-up began
        self.seconds = 0.0  # finished hold-ups

    def _update(self) -> None:
        blocked = self._waiting > 0 and self._holding == 0
        if blocked and self._since is None:
            self._since = self.now()
        elif not blocked and self._since is not None:
            self.seconds += self.now() - self._since
            self._since = None
        else:
            return
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"queued_s": self.seconds, "blocked_since": self._since}))
            os.replace(tmp, self.path)

    def waiting(self) -> None:
        with self._lock:
            self._waiting += 1
            self._update()

    def granted(self, ok: bool = True) -> None:
        with self._lock:
            self._waiting -= 1
            self._holding += int(ok)
            self._update()

    def released(self) -> None:
        with self._lock:
            self._holding -= 1
            self._update()


def queued_seconds(path: Path, now: float | None = None) -> float:
    """Seconds a chunk has been held up at the limiter so far, from its QueueClock file (0 without one)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0.0
    since = data.get("blocked_since")
    return float(data.get("queued_s", 0.0)) + ((now or time.time()) - since if since else 0.0)


@dataclass
class RayThrottle:
    """The Throttle a chunk process hands its source client: leases from the run's limiter actor."""

    actor: object
    holder: str
    clock: QueueClock | None = None

    @classmethod
    def connect(cls, name: str, namespace: str, holder: str, clock: QueueClock | None = None) -> "RayThrottle":
        return cls(ray.get_actor(name, namespace=namespace), holder, clock)

    def acquire(self, weight: float) -> int:
        if self.clock is None:
            return ray.get(self.actor.acquire.remote(self.holder, weight))
        self.clock.waiting()
        ok = False
        try:
            lease = ray.get(self.actor.acquire.remote(self.holder, weight))
            ok = True
            return lease
        finally:
            self.clock.granted(ok)

    def release(self, lease_id: int, status: int | None = None) -> None:
        self.actor.release.remote(lease_id, status)  # ordered after this caller's acquire; no need to wait
        if self.clock is not None:
            self.clock.released()
