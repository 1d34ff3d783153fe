"""What the benchmark concludes from its runs: lower bound, source use, an N-node projection, tables.

Pure functions over the run records `benchmarks/run.py` collects (one dict per run: the run
report, the fake server's counters, memory samples), so they are tested on their own.
"""

from __future__ import annotations

import heapq
import statistics
from dataclasses import dataclass

from jobs.limits import RateLimiter, SourceLimits, estimate_seconds


def bronze_tasks(run: dict) -> list[dict]:
    return [t for t in run["report"]["tasks"] if t["stage"] == "bronze"]


def lower_bound(baseline: dict, chunk_weights: list[list[float]], limits: SourceLimits, cores: int) -> dict:
    """Source time at its limit + measured CPU work / cores + silver and gold (the issue's bound).

    CPU work is what the baseline's warm session spent writing bronze chunks (no session start
    in it); silver and gold are the baseline's, which also ran in an already-warm session. A
    baseline recorded before it reported its write seconds gets them derived: its chunk seconds
    minus the one-request-at-a-time fetch the limiter model gives for that chunk.
    """
    source_s = estimate_seconds([w for chunk in chunk_weights for w in chunk], limits)
    tasks = bronze_tasks(baseline)
    measured = all(t["metrics"].get("write_seconds") is not None for t in tasks)
    if measured:
        cpu_s = sum(t["metrics"]["write_seconds"] for t in tasks)
    else:
        cpu_s = sum(max(0.0, t["seconds"] - estimate_seconds(w, limits, concurrency=1))
                    for t, w in zip(tasks, chunk_weights))
    stages = baseline["report"]["stage_seconds"]
    silver_gold = stages.get("silver", 0) + stages.get("gold", 0)
    total = source_s + cpu_s / cores + silver_gold
    return {"source_s": round(source_s, 1), "cpu_work_s": round(cpu_s, 1), "cores": cores,
            "cpu_work": "measured" if measured else "derived", "silver_gold_s": round(silver_gold, 1),
            "total_s": round(total, 1)}


def source_use(run: dict, limits: SourceLimits) -> dict:
    """Requests, weighted calls, 429s, and the achieved rate against what the limit allows."""
    server = run["server"]
    limiter = (run["report"].get("source") or {}).get("limiter") or {}
    first, last = limiter.get("first_grant"), limiter.get("last_grant")
    span = (last - first) if first is not None and last is not None else None
    out = {"requests": server["requests"], "weighted_calls": round(server["weighted_calls"], 1),
           "responses_429": server["by_status"].get("429", server["by_status"].get(429, 0)),
           "max_in_flight": server["max_in_flight"], "ingest_span_s": round(span, 1) if span else None}
    if span and limits.per_minute:
        # the average rate from the first to the last request against the per-minute limit; the
        # first minute's full quota is usable at once, so a short run can show a little over 100 %
        out["calls_per_minute"] = round(server["weighted_calls"] / span * 60.0, 1)
        out["share_of_limit"] = round(out["calls_per_minute"] / limits.per_minute, 3)
    return out


def chunk_costs(run: dict) -> dict:
    """Median per-chunk phase seconds of a Ray run: process + session start, fetch, write, stop."""
    tasks = [t for t in bronze_tasks(run) if t["status"] == "succeeded"]
    def med(key):
        values = [t["metrics"].get(key) for t in tasks if t["metrics"].get(key) is not None]
        return round(statistics.median(values), 2) if values else None
    start = [t["session_seconds"] for t in tasks if t.get("session_seconds") is not None]
    return {"chunks": len(tasks), "session_start_s": round(statistics.median(start), 2) if start else None,
            "fetch_s": med("fetch_seconds"), "write_s": med("write_seconds"), "session_stop_s": med("stop_seconds"),
            "chunk_s": round(statistics.median(t["seconds"] for t in tasks), 2) if tasks else None}


@dataclass(frozen=True)
class ChunkModel:
    """One chunk as the projection sees it: fixed start/stop, the source requests, the write."""

    start_s: float  # process + session start, overlapped with the fetch
    write_s: float
    stop_s: float
    request_weights: tuple[float, ...]
    concurrency: int  # requests one chunk keeps open


def project(chunks: list[ChunkModel], limits: SourceLimits, nodes: int, slots_per_node: int,
            after_s: float, latency_s: float) -> float:
    """Makespan of the bronze chunks on `nodes` × `slots_per_node` slots, sharing the source's
    limits, plus `after_s` (silver and gold, one session each). A discrete-event simulation."""
    now = 0.0
    limiter = RateLimiter(limits, lease_ttl_s=max(60.0, latency_s * 10), clock=lambda: now)
    slots = nodes * slots_per_node
    queue = list(chunks)
    events: list[tuple[float, int, str, object]] = []  # (time, seq, kind, payload)
    seq = 0

    def push(at, kind, payload):
        nonlocal seq
        heapq.heappush(events, (at, seq, kind, payload))
        seq += 1

    state = {}
    waiting: list[int] = []  # chunk ids with requests waiting for the limiter
    busy = 0
    done_at = 0.0
    retries: list[float] = []  # wake-ups scheduled for requests the limiter turned away
    while True:  # ends when nothing is left to happen (checked after handing out requests)
        while queue and busy < slots:
            chunk = queue.pop(0)
            cid = len(state)
            state[cid] = {"chunk": chunk, "pending": list(chunk.request_weights), "open": 0, "fetched": None,
                          "started": now, "ready": now + chunk.start_s}
            busy += 1
            waiting.append(cid)
            push(now + chunk.start_s, "session", cid)
        # hand out requests to chunks that may open more, in order
        for cid in list(waiting):
            s = state[cid]
            while s["pending"] and s["open"] < s["chunk"].concurrency:
                grant = limiter.try_acquire(str(cid), s["pending"][0])
                if grant.lease_id is None:
                    # one wake-up for everybody waiting on the limiter, not one per waiter per event
                    at = now + grant.wait_s
                    if not retries or min(retries) > at + 1e-9:
                        retries.append(at)
                        push(at, "retry", at)
                    break
                s["pending"].pop(0)
                s["open"] += 1
                push(now + latency_s, "response", (cid, grant.lease_id))
            if not s["pending"]:
                waiting.remove(cid)
                if s["open"] == 0 and s["fetched"] is None:
                    s["fetched"] = now
                    _maybe_write(s, now, push, cid)
        if not events:
            break
        now, _, kind, payload = heapq.heappop(events)
        if kind == "response":
            cid, lease = payload
            limiter.release(lease)
            s = state[cid]
            s["open"] -= 1
            if not s["pending"] and s["open"] == 0:
                s["fetched"] = now
                _maybe_write(s, now, push, cid)
        elif kind == "session":
            _maybe_write(state[payload], now, push, payload)
        elif kind == "retry":
            retries.remove(payload)
        elif kind == "done":
            busy -= 1
            done_at = max(done_at, now)
    return round(done_at + after_s, 1)


def _maybe_write(s: dict, now: float, push, cid: int) -> None:
    if s.get("writing") or s["fetched"] is None or now < s["ready"]:
        return
    s["writing"] = True
    push(now + s["chunk"].write_s + s["chunk"].stop_s, "done", cid)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join("" if v is None else (f"{v:,.1f}" if isinstance(v, float) else str(v))
                                       for v in row) + " |")
    return "\n".join(lines)
