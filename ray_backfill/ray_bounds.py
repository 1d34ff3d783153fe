"""What a Ray cluster keeps as a long run goes on, bounded (docs/operations.md#ray-state).

Each chunk adds a few Ray jobs (its driver, its RayDP gateway), actors (its supervisor, RayDP's app
master and executors) and workers. Ray's GCS keeps the dead ones' records and every task's events
up to caches of 100,000 each, and its daemons' logs rotate only at 512 MiB a file: over a 500-chunk
soak (benchmarks/soak.py) gcs_server grew by 60 MiB and the daemons' logs by 15 MiB, with no end in
sight. A local cluster a run starts gets these bounds; `cluster/ray-node.sh head` starts a cluster's
head with the same (tests/test_cluster_files.py checks the two agree).

Not a bound: Ray 2.60's `event_stats_print_interval_ms: -1`, which reads as "no event statistics
in the logs", makes the GCS print its debug state in a loop, 1.5 MB a second.

Standard library only, and nothing here imports Ray.
"""

from __future__ import annotations

# ray.init(_system_config=...) / `ray start --head --system-config` (the head node's GCS)
SYSTEM_CONFIG: dict[str, int] = {
    "maximum_gcs_destroyed_actor_cached_count": 1000,  # the dashboard lists the last 1,000 dead actors
    "maximum_gcs_dead_worker_cached_count": 1000,
    "task_events_max_num_task_in_gcs": 10000,  # the dashboard's task list: the last 10,000 tasks
}

# the environment of the processes that start Ray's daemons: each log file rotates at 8 MiB, one
# earlier file kept (Ray's defaults: 512 MiB and 5)
LOG_ROTATION: dict[str, str] = {"RAY_ROTATION_MAX_BYTES": str(8 * 1024 * 1024), "RAY_ROTATION_BACKUP_COUNT": "1"}
