"""Turn collected benchmark runs into conclusions, a markdown report, a JSON file and plots."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks import analysis, plots
from jobs.limits import SourceLimits

NODES = (1, 2, 4, 8, 16)


def machine() -> dict:
    """What the figures were measured on."""
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return {"cpus": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "java": java,
            "python": sys.version.split()[0], "load_1min_at_start": round(os.getloadavg()[0], 2)}


def conclude(results: dict, workload_weights: dict[str, list[list[float]]]) -> None:
    """Add to each profile: lower bound, per-run source use and chunk costs, speed-ups, projection."""
    cores = results["machine"]["cpus"]
    for profile, block in results["profiles"].items():
        limits = SourceLimits(**block["limits"])
        baseline = next(r for r in block["runs"] if r["executor"] == "sequential")
        block["lower_bound"] = analysis.lower_bound(baseline, workload_weights[profile], limits, cores)
    # The bronze writes are the same work under every profile: the least any baseline spent on them
    # is the CPU work of the bound (a derived figure from a quota-bound baseline carries its waits).
    cpu = min(b["lower_bound"]["cpu_work_s"] for b in results["profiles"].values())
    for profile, block in results["profiles"].items():
        limits = SourceLimits(**block["limits"])
        bound = block["lower_bound"]
        bound["cpu_work_s"] = cpu
        bound["total_s"] = round(bound["source_s"] + cpu / cores + bound["silver_gold_s"], 1)
        baseline = next(r for r in block["runs"] if r["executor"] == "sequential")
        base_total = baseline["report"]["stage_seconds"]["total"]
        for run in block["runs"]:
            total = run["report"]["stage_seconds"]["total"]
            run["source_use"] = analysis.source_use(run, limits)
            run["chunk_costs"] = analysis.chunk_costs(run)
            run["speedup_vs_baseline"] = round(base_total / total, 2)
            run["ratio_to_lower_bound"] = round(total / bound["total_s"], 2)
            run["peak_rss"] = _peaks(run)
        ray_runs = [r for r in block["runs"] if r["executor"] == "ray"]
        if ray_runs:
            best = min(ray_runs, key=lambda r: r["report"]["stage_seconds"]["total"])
            block["projection"] = projection(best, workload_weights[profile], limits)


def _peaks(run: dict) -> dict:
    mem = run.get("memory") or {}
    chunks = mem.get("chunks", {})
    by_chunk = {name: max(s["rss_mb"]) for name, s in chunks.items() if s["rss_mb"]}
    bronze = [v for k, v in sorted(by_chunk.items()) if k.startswith("bronze-")]
    return {"driver_mb": max(mem.get("driver_mb") or [0]), "machine_used_mb": max(mem.get("machine_used_mb") or [0]),
            "chunk_max_mb": max(by_chunk.values(), default=None),
            "first_bronze_mb": bronze[0] if bronze else None, "last_bronze_mb": bronze[-1] if bronze else None,
            # 20 s in (prepare done, first chunks running): against the peak, the driver's growth
            "driver_early_mb": (mem.get("driver_mb") or [None])[min(40, len(mem.get("driver_mb") or [0]) - 1)]}


def projection(run: dict, weights: list[list[float]], limits: SourceLimits) -> dict:
    """Projected wall seconds on N nodes like this one, from the run's measured per-chunk costs."""
    tasks = [t for t in analysis.bronze_tasks(run) if t["status"] == "succeeded"]
    starts = []
    for t in tasks:
        m = t["metrics"]
        overlap_excess = max(0.0, (m.get("fetch_seconds") or 0) - (t.get("session_seconds") or 0))
        starts.append(t["seconds"] - (m.get("write_seconds") or 0) - (m.get("stop_seconds") or 0) - overlap_excess)
    start_s = statistics.median(starts)
    write_s = statistics.median(t["metrics"].get("write_seconds") or 0 for t in tasks)
    stop_s = statistics.median(t["metrics"].get("stop_seconds") or 0 for t in tasks)
    stages = run["report"]["stage_seconds"]
    after = stages.get("prepare", 0) + stages.get("silver", 0) + stages.get("gold", 0)
    concurrency = min(8, limits.max_in_flight or 8)
    chunks = [analysis.ChunkModel(start_s, write_s, stop_s, tuple(w), concurrency) for w in weights]
    slots = run["parallelism"]
    return {
        "from_run": run["label"], "slots_per_node": slots,
        "chunk_start_s": round(start_s, 1), "chunk_write_s": round(write_s, 1), "chunk_stop_s": round(stop_s, 1),
        "after_bronze_s": round(after, 1),
        "assumptions": (
            f"identical nodes each running {slots} chunks at once at the per-chunk costs measured in "
            f"'{run['label']}' (medians: start {start_s:.1f}s overlapped with the fetch, write {write_s:.1f}s, "
            f"stop {stop_s:.1f}s); the source's limits are shared by the whole cluster and each request takes "
            f"{limits.latency_s:g}s; prepare, silver and gold take what they took here ({after:.0f}s), as they "
            "run once on one node; the catalog and warehouse keep up with the commits"),
        "seconds": {str(n): analysis.project(chunks, limits, n, slots, after, limits.latency_s) for n in NODES},
    }


def markdown(results: dict) -> str:
    w = results["workload"]
    m = results["machine"]
    lines = [f"# Benchmark: {w['name']} ({w['start']} .. {w['end']}, {w['locations']} locations, "
             f"{w['variables']} variables)", "",
             f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['java']}, Python {m['python']} "
             f"(load {m['load_1min_at_start']} at start). Command: `{results['command']}`. "
             f"Started {results['started_at']}.", "",
             f"Tables identical across all runs (order-independent checksums): "
             f"**{'yes' if results.get('checksums_identical') else 'NO'}**.", ""]
    for profile, block in results["profiles"].items():
        lim = block["limits"]
        bound = block["lower_bound"]
        lines += [f"## Source profile `{profile}`", "",
                  f"Limits: {SourceLimits(**lim).describe()}, {lim['latency_s']}s per request; {block['batch_size']} location(s) "
                  f"per request. Lower bound {bound['total_s']:.0f}s = source at its limit {bound['source_s']:.0f}s + "
                  f"CPU work {bound['cpu_work_s']:.0f}s ({bound['cpu_work']}: the least of the baselines' bronze writes) / "
                  f"{bound['cores']} cores + silver and gold {bound['silver_gold_s']:.0f}s.", ""]
        rows = []
        for r in block["runs"]:
            st, su, cc, pk = r["report"]["stage_seconds"], r["source_use"], r["chunk_costs"], r["peak_rss"]
            rows.append([r["label"], st.get("total"), st.get("bronze"), st.get("silver"), st.get("gold"),
                         f"{r['speedup_vs_baseline']:.2f}x", f"{r['ratio_to_lower_bound']:.2f}x",
                         su["requests"], su["weighted_calls"], su.get("calls_per_minute"),
                         f"{su['share_of_limit']:.0%}" if su.get("share_of_limit") else None,
                         su["responses_429"], su["max_in_flight"], cc["session_start_s"], cc["session_stop_s"],
                         pk["chunk_max_mb"], f"{pk['first_bronze_mb'] or 0:.0f} / {pk['last_bronze_mb'] or 0:.0f}",
                         _driver_cell(r, pk), pk["machine_used_mb"]])
        lines.append(analysis.markdown_table(
            ["run", "total s", "bronze s", "silver s", "gold s", "speed-up", "÷ bound", "requests", "weighted calls",
             "calls/min", "of limit", "429s", "max in flight", "session start s (median)", "session stop s (median)",
             "chunk peak RSS MiB", "first / last bronze chunk RSS MiB", "driver RSS MiB at 20 s / peak",
             "machine peak used MiB"], rows))
        proj = block.get("projection")
        if proj:
            lines += ["", f"Projection for N nodes (simulation from `{proj['from_run']}`): " + proj["assumptions"] + ".",
                      "", analysis.markdown_table(["nodes", *proj["seconds"]],
                                                  [["projected total s", *proj["seconds"].values()]])]
        lines.append("")
    overhead = results.get("chunk_overhead")
    if overhead:
        lines += ["## Per-chunk fixed cost (fresh process: session up, first job, down)", "",
                  overhead_markdown(overhead["summary"]), ""]
    return "\n".join(lines)


def _driver_cell(run: dict, peaks: dict) -> str:
    # The first sampler also counted, for Ray runs, every JVM under the CLI's local Ray (the chunks'):
    # not the driver's own memory, so not shown.
    if run["executor"] == "ray" and (run.get("memory") or {}).get("sampler", 1) < 2:
        return "—"
    return f"{peaks['driver_early_mb'] or 0:.0f} / {peaks['driver_mb']:.0f}"


def overhead_markdown(rows: list[dict]) -> str:
    """The per-chunk fixed cost table of benchmarks/chunk_overhead.py: one row per mode and driver JVM."""
    phases = list(rows[0]["phases"]) if rows else []
    lines = ["| mode | driver JVM | runs | total s | " + " | ".join(phases) + " |", "|" + "---|" * (4 + len(phases))]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['variant']} | {r['n']} | {r['total_s']:.1f} | "
                     + " | ".join(f"{r['phases'][p]:.1f}" for p in phases) + " |")
    return "\n".join(lines)


def write(results: dict, out: Path) -> list[Path]:
    """results.json, results.md and the plots; the last chunk_overhead.json is folded in."""
    overhead = out / "chunk_overhead.json"
    if overhead.is_file():
        results["chunk_overhead"] = json.loads(overhead.read_text())
    paths = [out / "results.json", out / "results.md"]
    paths[0].write_text(json.dumps(results, indent=1))
    paths[1].write_text(markdown(results) + "\n")
    paths.append(plots.wall_times(results, out / "wall_time.png"))
    paths.append(plots.memory(results, out / "memory.png"))
    ray_runs = [r for b in results["profiles"].values() for r in b["runs"] if r["executor"] == "ray"]
    if ray_runs:
        fastest = min(ray_runs, key=lambda r: r["report"]["stage_seconds"]["total"])
        paths.append(plots.timeline(fastest, out / "timeline.png"))
    return paths
