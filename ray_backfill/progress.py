"""What a person watching a run sees: in a terminal, a live display (rich) above which each
finished task prints one line; elsewhere (`ray job submit`, CI, a pipe) plain event lines only.
And the summary table at the end."""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

from ray_backfill.ledger import ChunkStatus, RunRecord


@dataclass(frozen=True)
class Flight:
    """An attempt in flight, as the live display shows it."""

    task_id: str
    attempt: int
    began: float  # epoch seconds
    phase: str = "starting"


def eta_seconds(record: RunRecord, slots: int, flights: list[Flight], now: float | None = None) -> float | None:
    """Seconds until the run's tasks are all done, from the tasks measured so far; None before any.

    A task takes the median of its stage's succeeded tasks (a stage with none yet: the bronze
    chunks'); bronze chunks share `slots`, the whole-range stages run one after another.
    """
    now = time.time() if now is None else now
    typical: dict[str, float] = {}
    for stage in {t.stage for t in record.tasks}:
        seconds = [t.seconds for t in record.by_stage(stage) if t.status == ChunkStatus.SUCCEEDED and t.seconds]
        if seconds:
            typical[stage] = statistics.median(seconds)
    if "bronze" not in typical:
        return None
    running = {f.task_id: f for f in flights}
    bronze, after = 0.0, 0.0
    for task in record.tasks:
        if task.status in (ChunkStatus.SUCCEEDED, ChunkStatus.FAILED, ChunkStatus.CANCELLED):
            continue
        left = typical.get(task.stage, typical["bronze"])
        if task.task_id in running:
            left = max(0.0, left - (now - running[task.task_id].began))
        if task.stage == "bronze":
            bronze += left
        elif task.stage != "prepare":
            after += left
    return bronze / max(1, slots) + after


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Reports the loop's events. In a terminal a live display (overall bar, elapsed time and ETA,
    counts per stage, the attempts in flight with their phase and seconds) stays at the bottom and
    only finished tasks print a line; otherwise every event is a plain line."""

    def __init__(self, echo: Callable[[str], None] = print, tty: bool | None = None, console=None):
        self.echo = echo
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.console = console  # rich's Console to draw on; None: the terminal
        self.slots = 1
        self._live = None
        self._record: RunRecord | None = None
        self._flights: list[Flight] = []
        self._started = time.monotonic()

    @property
    def live(self) -> bool:
        """Whether the display shows the attempts in flight (the loop then asks for their phases)."""
        return self._live is not None

    def start(self, record: RunRecord, slots: int) -> None:
        self._record, self.slots, self._started = record, slots, time.monotonic()
        if not self.tty or self._live is not None:
            return
        from rich.live import Live

        # prints of the driver (echo) and its log go above the display while it is up
        self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=2,
                          transient=True, redirect_stdout=True, redirect_stderr=True)
        self._live.start()

    def event(self, record: RunRecord, line: str, started: bool = False) -> None:
        """A task's state changed: `line` says how. An attempt that `started` is shown in the live
        display rather than printed."""
        self._record = record
        if not (started and self.live):
            self.echo(line)

    def flights(self, flights: list[Flight]) -> None:
        self._flights = flights

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _render(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        record = self._record
        if record is None:
            return Text("")
        total = len(record.tasks) or 1
        done = sum(t.status == ChunkStatus.SUCCEEDED for t in record.tasks)
        failed = sum(t.status in (ChunkStatus.FAILED, ChunkStatus.CANCELLED) for t in record.tasks)
        eta = eta_seconds(record, self.slots, self._flights)
        head = Table.grid(padding=(0, 1))
        head.add_row(ProgressBar(total=total, completed=done, width=40),
                     Text(f"{done}/{total} tasks", style="bold"),
                     Text(f"{_clock(time.monotonic() - self._started)} elapsed", style="cyan"),
                     Text(f"ETA ~{_clock(eta)}" if eta is not None else "ETA after the first chunk", style="green"),
                     Text(f"{failed} failed", style="red") if failed else Text(""))
        stages = []
        for stage in dict.fromkeys(t.stage for t in record.tasks):
            tasks = record.by_stage(stage)
            ok = sum(t.status == ChunkStatus.SUCCEEDED for t in tasks)
            running = sum(t.status == ChunkStatus.RUNNING for t in tasks)
            stages.append(f"{stage} {ok}/{len(tasks)}" + (f" ({running} running)" if running else ""))
        flights = Table.grid(padding=(0, 2))
        for width in (16, 10, 14, 6):
            flights.add_column(min_width=width)
        now = time.time()
        for f in sorted(self._flights, key=lambda f: f.began):
            flights.add_row(Text(f"  {f.task_id}"), Text(f"attempt {f.attempt}", style="dim"),
                            Text(f.phase, style="yellow"), Text(f"{now - f.began:5.0f}s", justify="right"))
        return Group(head, Text("  " + " · ".join(stages), style="dim"), flights)

    @staticmethod
    def bar(record: RunRecord, width: int = 30) -> str:
        """The run's progress as one plain line (status, logs)."""
        counts = {s: 0 for s in ChunkStatus}
        for task in record.tasks:
            counts[task.status] += 1
        total = len(record.tasks) or 1
        done = counts[ChunkStatus.SUCCEEDED]
        filled = int(width * done / total)
        return (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} done, "
                f"{counts[ChunkStatus.RUNNING]} running, {counts[ChunkStatus.FAILED]} failed")


def summary_table(record: RunRecord) -> str:
    """One row per task: state, attempts, rows, seconds, peak RSS, node."""
    header = f"{'task':<30} {'state':<10} {'tries':>5} {'rows':>10} {'seconds':>8} {'peak MiB':>8}  node"
    lines = [header, "-" * len(header)]
    for t in record.tasks:
        rss = f"{t.peak_rss_mb:.0f}" if t.peak_rss_mb else "-"
        lines.append(f"{t.task_id:<30} {t.status.value:<10} {t.attempts:>5} {t.rows:>10,} {t.seconds:>8.1f} "
                     f"{rss:>8}  {(t.node_id or '-')[:12]}")
        if t.error and t.status != ChunkStatus.SUCCEEDED:
            lines.append(f"    last error: {t.error}")
            if t.metrics.get("log"):
                lines.append(f"    its log: {t.metrics['log']}")
    return "\n".join(lines)
