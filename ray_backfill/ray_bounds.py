"""What a Ray cluster keeps as a long run goes on, bounded (docs/operations.md#ray-state).

Each chunk adds actors (its Spark executors; RayDP's master and the supervisors live per slot for
the run) and workers. Ray's GCS keeps the dead ones' records and every task's events up to caches
of 100,000 each, and its daemons' logs rotate only at 512 MiB a file: over a 500-chunk soak
(benchmarks/soak.py) gcs_server grew by 60 MiB and the daemons' logs by 15 MiB, with no end in
sight. A local cluster a run starts gets these bounds; `cluster/ray-node.sh head` starts a cluster's
head with the same (tests/test_cluster_files.py checks the two agree). The caps are small on
purpose: the run's ledger and report are its record, the dashboard shows what runs now, and a cache
that fills within a run's first hundred chunks leaves the GCS flat for the rest.

Not a bound: Ray 2.60's `event_stats_print_interval_ms: -1`, which reads as "no event statistics
in the logs", makes the GCS print its debug state in a loop, 1.5 MB a second.

Standard library only, and nothing here imports Ray.
"""

from __future__ import annotations

# ray.init(_system_config=...) / `ray start --head --system-config` (the head node's GCS)
SYSTEM_CONFIG: dict[str, int] = {
    "maximum_gcs_destroyed_actor_cached_count": 100,  # the dashboard lists the last 100 dead actors
    "maximum_gcs_dead_worker_cached_count": 100,
    "task_events_max_num_task_in_gcs": 1000,  # the dashboard's task list: the last 1,000 tasks
}

# the environment of the processes that start Ray's daemons: each log file rotates at 8 MiB, one
# earlier file kept (Ray's defaults: 512 MiB and 5); Ray's log monitor tails at most 32 worker log
# files at a time (its default, 200: it holds each open, a removed one too, until it has that many,
# so its open files and the deleted files it holds grew with the chunks done for the first 200)
DAEMON_ENV: dict[str, str] = {"RAY_ROTATION_MAX_BYTES": str(8 * 1024 * 1024), "RAY_ROTATION_BACKUP_COUNT": "1",
                              "RAY_LOG_MONITOR_MAX_OPEN_FILES": "32"}
