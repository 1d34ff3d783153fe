"""A source's limits, and the one limiter that keeps every chunk of a run inside them.

The model is Open-Meteo's (docs/operations.md#open-meteo): weighted calls per minute, hour and day, and requests in
flight. `RateLimiter` grants *leases*: a lease holds one in-flight slot until it is released or
expires (a chunk that died without releasing cannot leak its slot), and its weight is charged
to every window at grant time, because the API counts failed calls too. Windows slide, so the
limiter never exceeds the API's clock-aligned windows either.

The same model answers "how long must ingestion take at least" for `plan` (`estimate_seconds`).
Nothing here imports Ray: the Ray executor wraps `RateLimiter` in an actor, the sequential
baseline uses it in-process.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol, Sequence

from jobs.errors import ConfigError

_WINDOWS = (("per_minute", 60.0), ("per_hour", 3600.0), ("per_day", 86400.0))
# the per-minute use a limiter keeps for the run report: the last day's minutes at most
MINUTES_KEPT = 1440


@dataclass(frozen=True, kw_only=True)
class SourceLimits:
    """What a source tolerates; None means no limit of that kind."""

    # weighted calls per sliding minute / hour / day
    per_minute: float | None = None
    per_hour: float | None = None
    per_day: float | None = None
    # requests open at once, across every chunk of the run
    max_in_flight: int | None = None
    # expected seconds per request (for estimates and the fake server; not enforced)
    latency_s: float = 0.4

    def __post_init__(self) -> None:
        for name in ("per_minute", "per_hour", "per_day"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"source limit {name}={value} must be positive")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ConfigError(f"source limit max_in_flight={self.max_in_flight} must be >= 1")
        if self.latency_s < 0:
            raise ConfigError(f"source latency {self.latency_s} must be >= 0")

    @property
    def is_unlimited(self) -> bool:
        return self.max_in_flight is None and all(getattr(self, n) is None for n, _ in _WINDOWS)

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """e.g. "600 calls/min, 5,000 calls/hour, 10,000 calls/day, 1 in flight"."""
        parts = [f"{value:,.0f} calls/{unit}" for value, unit in
                 ((self.per_minute, "min"), (self.per_hour, "hour"), (self.per_day, "day")) if value is not None]
        parts.append(f"{self.max_in_flight} in flight" if self.max_in_flight else "no in-flight limit")
        return ", ".join(parts)


# Open-Meteo's free tier per IP; its commercial plans (https://open-meteo.com/en/pricing: the
# Standard plan has no per-minute, hourly or daily limit and 1,000,000 calls a month, with an API
# key on the customer- host; no in-flight limit is stated, 8 keeps a run a polite client); an
# instance of one's own (docker image, no quota).
PROFILES: dict[str, SourceLimits] = {
    "free": SourceLimits(per_minute=600, per_hour=5000, per_day=10000, max_in_flight=1),
    "commercial": SourceLimits(max_in_flight=8),
    "self-hosted": SourceLimits(max_in_flight=8),
    "unlimited": SourceLimits(),
}
COMMERCIAL_MONTHLY_CALLS = 1_000_000  # the Standard plan's calls a month (weighted, as the quota counts)


def profile_limits(name: str) -> SourceLimits:
    """The limits of a named profile; a one-line error names the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"source profile {name!r} is unknown; use {', '.join(PROFILES)}") from None


@dataclass
class LimiterStats:
    """What the limiter granted and how long callers waited for it."""

    leases: int = 0
    weighted_calls: float = 0.0
    expired_leases: int = 0
    released_by_holder: int = 0
    max_in_flight: int = 0
    waits: int = 0
    # first and last grant (clock seconds), for the achieved rate
    first_grant: float | None = None
    last_grant: float | None = None


@dataclass(frozen=True)
class Grant:
    """The answer to one request for a slot: a lease id, or how long to wait before asking again."""

    lease_id: int | None
    wait_s: float


class RateLimiter:
    """Sliding-window weighted quota plus in-flight leases; thread-safe, clock injectable."""

    def __init__(self, limits: SourceLimits, *, lease_ttl_s: float = 120.0, clock: Callable[[], float] = time.time):
        if lease_ttl_s <= 0:
            raise ConfigError(f"lease ttl {lease_ttl_s} must be positive")
        self.limits = limits
        self.lease_ttl_s = lease_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        # lease id -> (holder, expires at)
        self._leases: dict[int, tuple[str, float]] = {}
        self._charges: collections.deque[tuple[float, float]] = collections.deque()  # (granted at, weight)
        self.stats = LimiterStats()
        # use per clock minute: {minute: [requests, weighted calls, 429s, most in flight]}, oldest dropped
        self._minutes: collections.OrderedDict[int, list[float]] = collections.OrderedDict()
        self._minutes_dropped = 0

    def try_acquire(self, holder: str, weight: float) -> Grant:
        """A lease if the limits allow `weight` more now, else the seconds until they might."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            wait = self._wait_s(weight, now)
            if wait > 0:
                self.stats.waits += 1
                return Grant(None, wait)
            lease = next(self._ids)
            self._leases[lease] = (holder, now + self.lease_ttl_s)
            self._charges.append((now, weight))
            s = self.stats
            s.leases += 1
            s.weighted_calls += weight
            s.max_in_flight = max(s.max_in_flight, len(self._leases))
            s.first_grant = now if s.first_grant is None else s.first_grant
            s.last_grant = now
            minute = self._minute(now)
            minute[0] += 1
            minute[1] += weight
            return Grant(lease, 0.0)

    def release(self, lease_id: int, status: int | None = None) -> bool:
        """Give a slot back, with the HTTP status the request got (429s are counted per minute);
        False if it had expired or was released already."""
        with self._lock:
            if status == 429:
                self._minute(self._clock())[2] += 1
            return self._leases.pop(lease_id, None) is not None

    def release_holder(self, holder: str) -> int:
        """Free every slot `holder` still has (its process died); the weight stays charged."""
        with self._lock:
            mine = [lease for lease, (who, _) in self._leases.items() if who == holder]
            for lease in mine:
                del self._leases[lease]
            self.stats.released_by_holder += len(mine)
            return len(mine)

    def in_flight(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._leases)

    def snapshot(self) -> dict:
        """Limits and counters, JSON-ready; `per_minute` is the use per clock minute (epoch seconds
        of its start), `per_minute_dropped` how many older minutes no longer fit in it."""
        with self._lock:
            per_minute = [{"minute": m * 60, "requests": int(r), "weighted_calls": round(w, 3),
                           "responses_429": int(t), "max_in_flight": int(f)}
                          for m, (r, w, t, f) in self._minutes.items()]
            return {"limits": self.limits.to_json(), "in_flight": len(self._leases), **asdict(self.stats),
                    "per_minute": per_minute, "per_minute_dropped": self._minutes_dropped}

    def _minute(self, now: float) -> list[float]:
        """This clock minute's use, its most-in-flight brought up to date (under the lock)."""
        key = int(now // 60)
        minute = self._minutes.get(key)
        if minute is None:
            minute = self._minutes[key] = [0, 0.0, 0, 0]
            if len(self._minutes) > MINUTES_KEPT:
                self._minutes.popitem(last=False)
                self._minutes_dropped += 1
        minute[3] = max(minute[3], len(self._leases))
        return minute

    def _expire(self, now: float) -> None:
        dead = [lease for lease, (_, expires) in self._leases.items() if expires <= now]
        for lease in dead:
            del self._leases[lease]
        self.stats.expired_leases += len(dead)
        horizon = max((span for name, span in _WINDOWS if getattr(self.limits, name) is not None), default=0.0)
        while self._charges and self._charges[0][0] <= now - horizon:
            self._charges.popleft()

    def _wait_s(self, weight: float, now: float) -> float:
        limits = self.limits
        if limits.max_in_flight is not None and len(self._leases) >= limits.max_in_flight:
            # a slot frees when a request ends; poll soon, or at the latest when a lease expires
            soonest = min(expires for _, expires in self._leases.values())
            return max(0.01, min(0.05, soonest - now))
        wait = 0.0
        for name, span in _WINDOWS:
            limit = getattr(limits, name)
            if limit is not None:
                wait = max(wait, _window_wait(self._charges, now, span, limit, weight))
        return wait


def _window_wait(charges: Sequence[tuple[float, float]], now: float, span: float, limit: float, weight: float) -> float:
    """Seconds until `weight` more fits in the sliding window; a request heavier than the whole
    limit is let through into an empty window rather than starved forever."""
    inside = [(at, w) for at, w in charges if at > now - span]
    used = sum(w for _, w in inside)
    if used + weight <= limit + 1e-9 or not inside:
        return 0.0
    for at, w in inside:  # oldest first: when enough has slid out, it fits
        used -= w
        if used + weight <= limit + 1e-9 or used <= 1e-9:
            return max(0.001, at + span - now)
    return max(0.001, inside[-1][0] + span - now)


class Throttle(Protocol):
    """What a source client asks before each HTTP attempt, and tells after it."""

    def acquire(self, weight: float) -> int: ...

    def release(self, lease_id: int, status: int | None = None) -> None: ...


@dataclass
class LocalThrottle:
    """A throttle on an in-process RateLimiter (the sequential baseline, and tests)."""

    limiter: RateLimiter
    holder: str = "local"
    sleep: Callable[[float], None] = time.sleep
    waited_s: float = field(default=0.0)

    def acquire(self, weight: float) -> int:
        while True:
            grant = self.limiter.try_acquire(self.holder, weight)
            if grant.lease_id is not None:
                return grant.lease_id
            self.waited_s += grant.wait_s
            self.sleep(grant.wait_s)

    def release(self, lease_id: int, status: int | None = None) -> None:
        self.limiter.release(lease_id, status)


def estimate_seconds(weights: Sequence[float], limits: SourceLimits, *, latency_s: float | None = None,
                     concurrency: int | None = None) -> float:
    """Shortest time to send requests of these weights under `limits`, each taking `latency_s`.

    A discrete-event run of the same RateLimiter on a simulated clock: `concurrency` callers
    (default: as many as the in-flight limit allows, 8 if unlimited) take requests in order.
    """
    latency = limits.latency_s if latency_s is None else latency_s
    callers = min(concurrency or limits.max_in_flight or 8, limits.max_in_flight or 1_000_000)
    if len(weights) > 5000:  # too many to simulate quickly: the bound the windows and slots imply
        total = sum(weights)
        spans = [total / getattr(limits, name) * span for name, span in _WINDOWS
                 if getattr(limits, name) is not None and total > getattr(limits, name)]
        return max([len(weights) * latency / callers, *spans])
    now = [0.0]
    limiter = RateLimiter(limits, lease_ttl_s=max(1.0, latency * 10 + 1), clock=lambda: now[0])
    ends: list[tuple[float, int]] = []  # (ends at, lease) of requests in flight
    free_callers = callers
    for weight in weights:
        while True:
            while ends and ends[0][0] <= now[0]:
                _, lease = heapq.heappop(ends)
                limiter.release(lease)
                free_callers += 1
            if free_callers:
                grant = limiter.try_acquire("estimate", weight)
                if grant.lease_id is not None:
                    heapq.heappush(ends, (now[0] + latency, grant.lease_id))
                    free_callers -= 1
                    break
                step = grant.wait_s
            else:
                step = ends[0][0] - now[0]
            if ends:
                step = min(step, ends[0][0] - now[0]) if step > 0 else ends[0][0] - now[0]
            now[0] += max(step, 1e-6)
    return max([now[0]] + [end for end, _ in ends])
