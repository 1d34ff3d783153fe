"""The baseline: the old design kept to compare against.

One long-lived Spark session in the driver process runs every bronze chunk one after another,
then silver and gold in that same session. Same job code, same tables as the Ray executor.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

from jobs.context import StageInputs
from jobs.stages import run_stage_range
from jobs.tables import ensure_tables
from ray_backfill.config import Settings
from ray_backfill.plan import Chunk
from ray_backfill.sessions import spark_session


class SequentialExecutor:
    """Runs every chunk and stage in one shared session, in order."""

    name = "sequential"

    def __init__(self, settings: Settings, inputs: StageInputs, run_id: str):
        self.settings = settings
        self.inputs = inputs
        self.run_id = run_id
        self._spark = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "SequentialExecutor":
        self._spark = self._stack.enter_context(spark_session(self.settings, f"backfill-{self.run_id}"))
        ensure_tables(self._spark, self.settings.catalog)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self._spark = None

    def run_stage(self, stage: str, chunk: Chunk) -> tuple[dict[str, int], float]:
        """Run one stage over one chunk in the shared session; rows per table and seconds."""
        started = time.monotonic()
        rows = run_stage_range(stage, self._spark, self.settings, chunk, self.inputs, self.run_id)
        return rows, time.monotonic() - started

    def run_bronze(self, chunks: list[Chunk]) -> Iterator[tuple[Chunk, dict[str, int], float]]:
        """Bronze chunks one after another, as the old tool ran them."""
        for chunk in chunks:
            rows, seconds = self.run_stage("bronze", chunk)
            yield chunk, rows, seconds
