"""Executors run the attempts the loop in `ray_backfill.loop` schedules, behind the `Executor`
interface of `base`: `ray` (a fresh process and session per attempt, under a Ray actor) and
`sequential` (the old design's one warm session). Of the executors only `ray.py` imports ray."""
