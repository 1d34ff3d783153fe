"""What the report page shows, built from a run's report data (report.json plus `settings`).

Pure data, no markup: every text here is plain (the template escapes it), every number that the page
prints is already formatted as it prints it. `build(report)` makes the whole `Report`;
`attempts_of` the attempts the timeline draws.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field

from jobs.config import SECRET_FIELDS, split_uri_secret

# phase -> its label, in the legend's order: the session's life, then the data work
PHASES = {
    "session_start": "session start",
    "standby": "standby: session up, waiting for its turn",
    "session_stop": "session stop",
    "fetch": "fetch from the source",
    "write": "write (Iceberg commit)",
    "work": "silver / gold",
}
HIDDEN = "(hidden)"
_SECRET_KEY = re.compile(r"password|passwd|secret|token|api[_-]?key|credential|access[_-]?key", re.IGNORECASE)
STAGES = ("prepare", "bronze", "silver", "gold")


@dataclass
class Attempt:
    """One attempt of a task as the timeline draws it (epoch seconds)."""

    task_id: str
    stage: str
    attempt: int
    status: str
    started_at: float
    ended_at: float
    node: str
    standby: bool = False
    phases: dict[str, list[float]] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    error: str | None = None

    @property
    def span(self) -> tuple[float, float]:
        """From its first sign of life (a standby's session start) to its last."""
        starts = [self.started_at, *(p[0] for p in self.phases.values())]
        ends = [self.ended_at, *(p[1] for p in self.phases.values())]
        return min(starts), max(ends)

    @property
    def turn(self) -> tuple[float, float]:
        """From its turn (when it took its slot) to its last sign of life: what its slot's lane holds."""
        return self.started_at, self.span[1]

    @property
    def label(self) -> str:
        return self.task_id if self.attempt == 1 else f"{self.task_id} #{self.attempt}"


@dataclass
class TaskRow:
    """A row of the task table, as it reads."""

    task_id: str
    status: str
    attempts: str
    rows: str
    seconds: str
    peak_mb: str
    node: str
    error: str


@dataclass
class MemoryBar:
    """A task's peak memory (its last attempt's process tree), a bar of the memory chart."""

    task_id: str
    stage: str
    status: str | None
    attempts: int | None
    peak_rss_mb: float


@dataclass
class SourceUse:
    """The source's counters, its limits and its per-minute use (quiet minutes filled in as zeros)."""

    facts: list[tuple[str, str]]
    limits: str
    minutes: list[dict]
    per_minute_limit: float | None
    in_flight_limit: float | None
    minutes_dropped: str | None


@dataclass
class TableRow:
    """A table's rows now (gold's summary) and rows this run wrote; `percent` of the largest count."""

    name: str
    rows_now: str
    written: str
    percent: float
    span: str


@dataclass
class Report:
    """Everything the page shows."""

    run_id: str
    outcome: str
    start_date: str
    end_date: str
    granularity: str
    executor: str
    started: str
    finished: str
    error: str
    cards: list[tuple[str, str]]
    stage_seconds: list[tuple[str, float]]
    total_seconds: float
    attempts: list[Attempt]  # this driver session's: a resumed run's earlier ones are counted, not drawn
    earlier_tasks: int
    first_clock: str
    tasks: list[TaskRow]
    memory: list[MemoryBar]
    source: SourceUse | None
    tables: list[TableRow]
    tables_from_gold: bool
    settings: list[tuple[str, list[tuple[str, str]]]]


def seconds_text(s: float) -> str:
    """12.3s, 4m 05s, 1h 02m."""
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"


def clock(epoch: float, seconds: bool = True) -> str:
    """The UTC time of day, 13:04:05 (or 13:04)."""
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%H:%M:%S" if seconds else "%H:%M")


def when(iso: str | None) -> str:
    if not iso:
        return "—"
    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def number_text(v: object) -> str:
    """1,234 and 1,234.5; a float that is whole as a whole number; anything else as it is."""
    if isinstance(v, float):
        return f"{v:,.1f}" if v != int(v) else f"{int(v):,}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def value_text(v: object) -> str:
    """A setting's value: — when empty, JSON for a list or a dict."""
    if v is None or v == [] or v == {}:
        return "—"
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def attempts_of(report: dict) -> list[Attempt]:
    """Every attempt the report knows: those that did not succeed (each task's `history`) and each
    task's successful last one (its `metrics`), in start order."""
    out = []
    for task in report.get("tasks", []):
        node = task.get("node_id")
        for h in task.get("history") or []:
            if h.get("started_at") is None or h.get("ended_at") is None:
                continue
            out.append(Attempt(task["task_id"], task["stage"], h["attempt"], h["status"], h["started_at"],
                               h["ended_at"], h.get("node_id") or "", bool(h.get("standby")),
                               peak_rss_mb=h.get("peak_rss_mb"), error=h.get("error")))
        m = task.get("metrics") or {}
        if task.get("status") == "succeeded" and m.get("started_at") is not None and m.get("ended_at") is not None:
            phases = {k: list(v) for k, v in (m.get("phases") or {}).items() if k in PHASES and len(v) == 2}
            ready = phases.get("session_start", [None, None])[1]
            if m.get("standby") and ready is not None and m["started_at"] > ready:
                phases["standby"] = [ready, m["started_at"]]
            out.append(Attempt(task["task_id"], task["stage"], task.get("attempts") or 1, "succeeded",
                               m["started_at"], m["ended_at"], node or "", bool(m.get("standby")), phases,
                               task.get("peak_rss_mb")))
    return sorted(out, key=lambda a: (a.span[0], a.task_id, a.attempt))


def redact(value: object, path: tuple[str, ...] = ()) -> object:
    """Settings with every secret hidden: the fields `jobs.config` keeps in the environment, any key
    that names a credential, and a password in a URI."""
    if path[-2:] in SECRET_FIELDS or (path and _SECRET_KEY.search(path[-1])):
        return HIDDEN if value not in (None, "") else None
    if isinstance(value, dict):
        return {k: redact(v, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and isinstance(value[0], str) and _SECRET_KEY.search(value[0]):
            return [value[0], HIDDEN]  # a (key, value) pair of catalog properties or spark conf
        return [redact(v, path) for v in value]
    if isinstance(value, str) and "://" in value:
        return split_uri_secret(value)[0]
    return value


def _session_start(report: dict) -> float | None:
    """Epoch seconds this driver session began (a resumed run's report draws only its own attempts)."""
    total = (report.get("stage_seconds") or {}).get("total")
    if not report.get("finished_at") or total is None:
        return None
    return dt.datetime.fromisoformat(report["finished_at"]).timestamp() - total - 2.0


def build(report: dict) -> Report:
    """The page's model from the report's data."""
    tasks = report.get("tasks", [])
    attempts = attempts_of(report)
    began = _session_start(report)
    earlier = {a.task_id for a in attempts if began is not None and a.span[1] < began}
    attempts = [a for a in attempts if began is None or a.span[1] >= began]
    request = report.get("request") or {}
    stage_seconds = report.get("stage_seconds") or {}
    total = stage_seconds.get("total") or 0.0
    t0 = min((a.span[0] for a in attempts), default=None)
    return Report(
        run_id=str(report.get("run_id", "")), outcome=str(report.get("outcome") or "unfinished"),
        start_date=str(request.get("start_date", "?")), end_date=str(request.get("end_date", "?")),
        granularity=str(request.get("granularity", "")), executor=str(request.get("executor", "")),
        started=when(report.get("created_at")), finished=when(report.get("finished_at")),
        error=str(report.get("error") or ""), cards=_cards(report, attempts, total),
        stage_seconds=[(s, stage_seconds[s]) for s in STAGES if stage_seconds.get(s)], total_seconds=total,
        attempts=attempts, earlier_tasks=len(earlier), first_clock=clock(t0) if t0 else "",
        tasks=[_task_row(t) for t in tasks],
        memory=[MemoryBar(t["task_id"], t["stage"], t.get("status"), t.get("attempts"), t["peak_rss_mb"])
                for t in tasks if t.get("peak_rss_mb")],
        source=source_use(report.get("source")), tables=table_rows(report), tables_from_gold=bool(report.get("tables")),
        settings=settings_sections(report))


def _cards(report: dict, attempts: list[Attempt], total: float) -> list[tuple[str, str]]:
    """The run at a glance: (what, how much)."""
    tasks = report.get("tasks", [])
    bronze = [t for t in tasks if t["stage"] == "bronze"]
    done = sum(t.get("status") == "succeeded" for t in bronze)
    rows = sum(t.get("rows", 0) for t in bronze)
    peaks = [t["peak_rss_mb"] for t in tasks if t.get("peak_rss_mb")]
    retries = sum(len(t.get("history") or []) for t in tasks)
    cards = [("wall time", seconds_text(total)), ("bronze chunks", f"{done} / {len(bronze)} committed"),
             ("attempts", f"{len(attempts)} ({retries} not ok)" if retries else str(len(attempts))),
             ("bronze rows", f"{rows:,}"), ("peak memory", f"{max(peaks):,.0f} MiB" if peaks else "—")]
    client = ((report.get("source") or {}).get("clients") or {})
    if client:
        cards.append(("source requests", f"{client.get('requests', 0):,} ({client.get('responses_429', 0)} × 429)"))
    return cards


def _task_row(t: dict) -> TaskRow:
    status = t.get("status", "")
    retried = len(t.get("history") or [])
    return TaskRow(
        task_id=str(t["task_id"]), status=str(status),
        attempts=f'{t.get("attempts", 0)}{" (" + str(retried) + " not ok)" if retried else ""}',
        rows=number_text(t.get("rows", 0)), seconds=seconds_text(t.get("seconds") or 0),
        peak_mb=number_text(round(t["peak_rss_mb"])) if t.get("peak_rss_mb") else "—",
        node=(t.get("node_id") or "—")[:12], error=str(t.get("error") or "") if status != "succeeded" else "")


def _minutes(limiter: dict) -> list[dict]:
    """The limiter's per-minute use, with the quiet minutes between filled in as zeros."""
    kept = {int(m["minute"]): m for m in limiter.get("per_minute") or []}
    if not kept:
        return []
    first, last = min(kept), max(kept)
    return [kept.get(m, {"minute": m, "requests": 0, "weighted_calls": 0, "responses_429": 0, "max_in_flight": 0})
            for m in range(first, last + 60, 60)]


def source_use(source: dict | None) -> SourceUse | None:
    """What the source was asked and what its limiter let through; None without a limiter."""
    if not source:
        return None
    limiter = source.get("limiter") or {}
    clients = source.get("clients") or {}
    limits = limiter.get("limits") or {}
    facts = [("requests sent", clients.get("requests")), ("weighted calls", clients.get("weighted_calls")),
             ("retries", clients.get("retries")), ("429 answers", clients.get("responses_429")),
             ("no answer (timeouts, connections)", clients.get("transport_errors")),
             ("leases granted", limiter.get("leases")), ("waits at the limiter", limiter.get("waits")),
             ("most in flight", limiter.get("max_in_flight")), ("expired leases", limiter.get("expired_leases"))]
    shown = ", ".join(f"{number_text(limits[k])} {u}" for k, u in (
        ("per_minute", "calls/min"), ("per_hour", "calls/hour"), ("per_day", "calls/day"),
        ("max_in_flight", "in flight")) if limits.get(k) is not None)
    dropped = limiter.get("per_minute_dropped")
    return SourceUse(facts=[(k, number_text(v)) for k, v in facts if v is not None], limits=shown or "none",
                     minutes=_minutes(limiter), per_minute_limit=limits.get("per_minute"),
                     in_flight_limit=limits.get("max_in_flight"), minutes_dropped=f"{dropped:,}" if dropped else None)


def table_rows(report: dict) -> list[TableRow]:
    """Rows in each table after the run (gold's summary) and rows this run's tasks wrote."""
    written: dict[str, int] = {}
    for t in report.get("tasks", []):
        for name, rows in ((t.get("metrics") or {}).get("tables") or {}).items():
            written[name] = written.get(name, 0) + int(rows)
    now = {s["table"]: s for s in report.get("tables") or []}
    names = [*now, *(n for n in written if n not in now)]
    top = max([*(s["rows"] for s in now.values()), *written.values(), 1])
    out = []
    for name in names:
        s = now.get(name, {})
        count = s.get("rows")
        shown = count if count is not None else written.get(name, 0)
        out.append(TableRow(name=str(name), rows_now=number_text(count) if count is not None else "—",
                            written=number_text(written[name]) if name in written else "—",
                            percent=shown / top * 100, span=f"{s['first']} .. {s['last']}" if s.get("first") else ""))
    return out


def settings_sections(report: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    """The run's request and its settings, secrets hidden: (section, [(key, value as text)])."""
    request = {k: v for k, v in (report.get("request") or {}).items() if k != "settings"}
    sections = {"run": request, **(redact(report.get("settings") or {}))}
    return [(str(name), [(str(k), value_text(v)) for k, v in values.items()])
            for name, values in sections.items() if isinstance(values, dict) and values]
