"""Errors of ray-backfill, rooted at one base class.

    BackfillError                 every error this project raises on purpose
    ├── InputError (ValueError)   bad user input: dates, files, flags, config values
    │   ├── DateRangeError        malformed date, end before start
    │   ├── InputFileError        a locations/pollutants file: names file and line
    │   └── ConfigError           an unusable or unsafe configuration
    ├── WarehouseError            the warehouse or catalog cannot be used
    ├── SourceError               the data source failed
    │   ├── SourceRequestError    the source refused the request: any 4xx but 429, or another
    │   │                         status it does not retry (e.g. 501); carries `status`, `reason`
    │   ├── SourceUnavailable     retries exhausted (429/5xx/timeouts/broken bodies), or the
    │   │                         hourly/daily quota used up
    │   └── IncompleteChunkError  the source's answer for a chunk lacks hours or variables, or
    │                             repeats hours; carries `chunk` and `location`
    ├── StageError                a Spark stage failed; carries `stage` and `chunk`
    └── IllegalTransition         a task state change the ledger forbids (a bug, not bad input)

Every message is one line that shows the offending value and, where it helps, how to fix it.
The CLI (`ray-backfill`, also its `stage` command) prints `error: <message>` on stderr and exits 1.

`permanent` says whether another attempt of the same task could succeed: bad input, a request
the source refuses (400/401/403 and other 4xx but 429) and a used-up daily quota are permanent
and not retried; everything else (429 with backoff, 5xx, timeouts, killed processes, commit
conflicts, errors of unknown kind) is transient and retried.
"""

from __future__ import annotations


class BackfillError(Exception):
    """Base of every error ray-backfill raises on purpose."""

    permanent = False  # True: retrying the same task cannot help


class InputError(BackfillError, ValueError):
    """Bad user input; nothing has been written when this is raised."""

    permanent = True


class DateRangeError(InputError):
    """A date that does not parse, or a range whose end is before its start."""


class InputFileError(InputError):
    """A locations or pollutants file with a broken line; names the file and line."""

    def __init__(self, path: str, line: int | None, problem: str):
        self.path = path
        self.line = line
        place = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{place}: {problem}")


class ConfigError(InputError):
    """A configuration that cannot work, or that could lose data."""


class WarehouseError(BackfillError):
    """The warehouse path or catalog is unreachable or unusable."""


class SourceError(BackfillError):
    """The data source failed."""


class SourceRequestError(SourceError):
    """The source refused the request itself (a 4xx other than 429, or a status not retried); retrying cannot help."""

    permanent = True

    def __init__(self, message: str, status: int | None = None, reason: str | None = None):
        self.status = status
        self.reason = reason
        super().__init__(message)


class SourceUnavailable(SourceError):
    """The source kept failing (rate limits, 5xx, timeouts, broken bodies) until retries ran out,
    or its hourly or daily quota is used up (`permanent` for the daily one: no retry today helps)."""

    def __init__(self, message: str, permanent: bool = False):
        self.permanent = permanent
        super().__init__(message)


class IncompleteChunkError(SourceError):
    """The source answered a bronze chunk with hours missing or repeated, or a variable left out;
    `chunk` is the chunk id, `location` the first location key with a gap. Nothing is written."""

    def __init__(self, message: str, chunk: str, location: str):
        self.chunk = chunk
        self.location = location
        super().__init__(message)


class StageError(BackfillError):
    """A Spark stage failed; `stage` is bronze/silver/gold, `chunk` the chunk id or None."""

    def __init__(self, message: str, stage: str, chunk: str | None = None):
        self.stage = stage
        self.chunk = chunk
        super().__init__(message)


class IllegalTransition(BackfillError):
    """A task state change the ledger does not allow (e.g. succeeded → running)."""
