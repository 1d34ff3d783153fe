"""What a person watching a run sees: a live bar in a terminal, plain log lines elsewhere,
and the summary table at the end."""

from __future__ import annotations

import sys
from typing import Callable

from ray_backfill.ledger import ChunkStatus, RunRecord


class Progress:
    """Reports task events; draws a one-line bar when writing to a terminal."""

    def __init__(self, echo: Callable[[str], None] = print, tty: bool | None = None):
        self.echo = echo
        self.tty = sys.stdout.isatty() if tty is None else tty
        self._bar_shown = False

    def event(self, record: RunRecord, line: str) -> None:
        if self.tty and self._bar_shown:
            sys.stdout.write("\r\033[K")
        self.echo(line)
        if self.tty:
            sys.stdout.write(self.bar(record))
            sys.stdout.flush()
            self._bar_shown = True

    def close(self) -> None:
        if self.tty and self._bar_shown:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()
            self._bar_shown = False

    @staticmethod
    def bar(record: RunRecord, width: int = 30) -> str:
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
    return "\n".join(lines)
