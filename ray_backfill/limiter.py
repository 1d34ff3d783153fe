"""The run-wide source limiter as a Ray actor, and the throttle chunk processes talk to it with.

One `SourceLimiterActor` per run (named `source-limiter-<run_id>` in the driver's namespace)
wraps `jobs.sources.limits.RateLimiter`. `acquire` waits inside the actor and is woken the
moment another chunk releases a slot, so a one-in-flight source is not left idle between
requests by polling. Leases expire after the request timeout, and the driver frees every lease of
a chunk attempt that ended badly, so a killed chunk never keeps a slot.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import ray

from jobs.sources.limits import RateLimiter, SourceLimits

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

    async def release(self, lease_id: int) -> bool:
        freed = self._limiter.release(lease_id)
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


@dataclass
class RayThrottle:
    """The Throttle a chunk process hands its source client: leases from the run's limiter actor."""

    actor: object
    holder: str

    @classmethod
    def connect(cls, name: str, namespace: str, holder: str) -> "RayThrottle":
        return cls(ray.get_actor(name, namespace=namespace), holder)

    def acquire(self, weight: float) -> int:
        return ray.get(self.actor.acquire.remote(self.holder, weight))

    def release(self, lease_id: int) -> None:
        self.actor.release.remote(lease_id)  # ordered after this caller's acquire; no need to wait
