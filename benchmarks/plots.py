"""PNG plots of a benchmark: wall time vs the lower bound, memory over time, a per-chunk timeline."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

PHASE_COLOURS = {"session_start": "#4c72b0", "fetch": "#dd8452", "write": "#55a868", "work": "#55a868",
                 "session_stop": "#c44e52"}


def wall_times(results: dict, path: Path) -> Path:
    """Bars of total seconds per run, one group per source profile, the lower bound as a line."""
    profiles = list(results["profiles"])
    fig, axes = plt.subplots(1, len(profiles), figsize=(6 * len(profiles), 4.5), squeeze=False)
    for ax, profile in zip(axes[0], profiles):
        block = results["profiles"][profile]
        runs = block["runs"]
        labels = [r["label"] for r in runs]
        totals = [r["report"]["stage_seconds"].get("total", 0) for r in runs]
        colours = ["#8c8c8c" if r["executor"] == "sequential" else "#4c72b0" for r in runs]
        ax.bar(labels, totals, color=colours)
        for x, total in enumerate(totals):
            ax.text(x, total, f"{total:.0f}s", ha="center", va="bottom", fontsize=8)
        bound = block.get("lower_bound", {}).get("total_s")
        if bound:
            ax.axhline(bound, color="#c44e52", linestyle="--", label=f"lower bound {bound:.0f}s")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_title(f"{results['workload']['name']}, source profile {profile}")
        ax.set_ylabel("wall seconds")
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def memory(results: dict, path: Path) -> Path:
    """RSS over time: the baseline's long-lived driver against each chunk's fresh process tree."""
    runs = [r for block in results["profiles"].values() for r in block["runs"]]
    baseline = next((r for r in runs if r["executor"] == "sequential"), None)
    ray_run = max((r for r in runs if r["executor"] == "ray"), key=lambda r: len(r.get("memory", {}).get("chunks", {})),
                  default=None)
    shown = [r for r in (baseline, ray_run) if r is not None]
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 3.5 * len(shown)), squeeze=False)
    for ax, run in zip(axes[:, 0], shown):
        mem = run.get("memory", {})
        t, driver = mem.get("t", []), mem.get("driver_mb", [])
        everything = run["executor"] == "ray" and mem.get("sampler", 1) < 2  # the first sampler's reading
        ax.plot(t, driver, color="#333333",
                label="CLI + every JVM under it (its local Ray: chunk and RayDP JVMs)" if everything
                else "driver: the CLI process + its own JVM")
        for name, series in sorted(mem.get("chunks", {}).items()):
            ax.plot(series["t"], series["rss_mb"], linewidth=1, alpha=0.8)
        if mem.get("machine_used_mb"):
            ax.plot(t, mem["machine_used_mb"], color="#999999", linestyle=":", label="whole machine, used")
        ax.set_title(f"{run['label']} ({run['profile']}): {len(mem.get('chunks', {}))} chunk process trees (coloured)")
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("RSS MiB")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def timeline(run: dict, path: Path) -> Path:
    """A Gantt chart: one row per task actor, its phases as coloured bars."""
    tasks = [t for t in run["report"]["tasks"] if t["metrics"].get("started_at")]
    origin = min(t["metrics"]["started_at"] for t in tasks)
    fig, ax = plt.subplots(figsize=(11, max(3, 0.28 * len(tasks) + 1)))
    for row, task in enumerate(tasks):
        m = task["metrics"]
        ax.barh(row, m["ended_at"] - m["started_at"], left=m["started_at"] - origin, color="#dddddd",
                edgecolor="#999999", height=0.8)
        for phase, (start, end) in (m.get("phases") or {}).items():
            height = 0.35 if phase == "fetch" else 0.6
            ax.barh(row, end - start, left=start - origin, height=height, color=PHASE_COLOURS.get(phase, "#999999"))
    ax.set_yticks(range(len(tasks)), [t["task_id"] for t in tasks], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first task started")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("#dddddd", *PHASE_COLOURS.values())]
    ax.legend(handles, ["process (whole attempt)", "session start", "fetch (overlaps)", "write", "silver/gold work",
                        "session stop"], fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{run['label']} ({run['profile']}): what each chunk actor did when")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def per_chunk(lines: dict[str, tuple[list[int], list[float]]], title: str, ylabel: str, path: Path,
              smooth: int = 1, peak: bool = False) -> Path:
    """One line per series against the chunk number; with `smooth` > 1 a rolling median over the raw
    values (the rolling highest with `peak`: a level that comes and goes would zig-zag as a median)."""
    fig, ax = plt.subplots(figsize=(10, 4))
    for label, (x, y) in lines.items():
        if not x:
            continue
        if smooth > 1 and len(y) > smooth:
            raw = ax.plot(x, y, linewidth=0.6, alpha=0.3)[0]
            ax.plot(x, _rolling(y, smooth, peak), color=raw.get_color(), linewidth=1.6,
                    label=f"{label} (rolling {'highest' if peak else 'median'} of {smooth})")
        else:
            ax.plot(x, y, linewidth=1.2, marker="." if len(x) < 60 else None, label=label)
    ax.set_title(title)
    ax.set_xlabel("chunk (in completion order)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _rolling(values: list[float], window: int, peak: bool = False) -> list[float]:
    # centred, shrinking at the ends: the line starts at the first chunk and ends at the last
    half = window // 2
    out = []
    for i in range(len(values)):
        part = sorted(values[max(0, i - half): i + half + 1])
        out.append(part[-1] if peak else part[len(part) // 2])
    return out
