"""The test tiers: a test is marked by what it starts (pyproject.toml's markers), so that `make
test-fast` (`-m "not process and not slow"`) runs only tests that start no process at all: no JVM,
no Ray, no PostgreSQL, no Chromium, no CLI, no `python -c`. Wired in by tests/conftest.py:

- the marker of what a fixture starts is added to every test that uses the fixture, however
  indirectly (FIXTURE_MARKERS): a new test cannot forget it;
- spark, ray, postgres and browser imply process (PROCESS_MARKERS);
- a test without the process marker that starts a process fails, at the call that starts it
  (ProcessNotMarked, from an audit hook): mark it `process`;
- slow tests get a longer timeout than pyproject.toml's default (SLOW_TIMEOUT_S).

tests/test_markers.py checks all of it.
"""

from __future__ import annotations

import os
import sys
import threading

import pytest

# fixture -> the marker of what it starts
FIXTURE_MARKERS = {
    "spark": "spark",  # a local Spark session: a JVM (tests/conftest.py; fresh_settings uses it)
    "postgres": "postgres",  # a PostgreSQL server (tests/conftest.py, tests/postgres.py)
    "browser": "browser",  # Chromium and chromedriver (tests/test_report.py)
    "ray_local": "ray",  # a local Ray cluster (tests/test_limiter.py)
}
# the markers of tests that start processes by their nature
PROCESS_MARKERS = ("spark", "ray", "postgres", "browser")
# every other test's is pyproject.toml's `timeout` (300 s); the slowest end-to-end tests take ~220 s
SLOW_TIMEOUT_S = 900
# the audit events of starting a process (https://docs.python.org/3/library/audit_events.html)
SPAWN_EVENTS = frozenset({"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system"})


class ProcessNotMarked(RuntimeError):
    """A test without the process marker started a process."""


def mark_by_what_they_start(items: list[pytest.Item]) -> None:
    """Add the markers the fixtures and the other markers imply, and the slow tests' timeout."""
    for item in items:
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in item.fixturenames and item.get_closest_marker(marker) is None:
                item.add_marker(marker)
        if item.get_closest_marker("process") is None and any(item.get_closest_marker(m) for m in PROCESS_MARKERS):
            item.add_marker("process")
        if item.get_closest_marker("slow") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


# The node id of the test running now if it may start no process. Its setup and its call are
# watched, on the main thread (where pytest runs them; a thread the test starts is not). Teardowns
# are not: the last test's teardown also ends the session's fixtures (pg_ctl stops PostgreSQL).
_watched: list[str] = []


def _command(event: str, args: tuple) -> str:
    """The command line in an event's arguments (none for os.fork)."""
    where = {"subprocess.Popen": 1, "os.system": 0, "os.posix_spawn": 1, "os.spawn": 2}.get(event)
    try:
        command = () if where is None else args[where]
        if isinstance(command, (str, bytes, os.PathLike)):
            return os.fsdecode(command)
        return " ".join(os.fsdecode(part) if isinstance(part, (bytes, os.PathLike)) else str(part) for part in command)
    except (IndexError, TypeError, ValueError):  # not the arguments this Python's documentation gives
        return repr(args)


def _refuse_unmarked_processes(event: str, args: tuple) -> None:
    if _watched and event in SPAWN_EVENTS and threading.current_thread() is threading.main_thread():
        what = _command(event, args)
        raise ProcessNotMarked(
            f"{_watched[0]} starts a process ({event}: {what[:200]}) but is not marked `process`: mark it "
            "@pytest.mark.process, so that `make test-fast` leaves it out (tests/tiers.py)")


sys.addaudithook(_refuse_unmarked_processes)  # once (this module is imported once), for the process's life


def watch(item: pytest.Item):
    """A hook wrapper's body: the item's phase may start no process unless it is marked `process`."""
    if item.get_closest_marker("process") is not None:
        return (yield)
    _watched.append(item.nodeid)
    try:
        return (yield)
    finally:
        _watched.clear()
