"""Executors run a planned backfill; they share the interface in `base` and the loop in
`ray_backfill.runner`. Only `ray.py` imports ray."""
