"""The Open-Meteo Air Quality API as a Source: batching, retries with backoff, and a quota count.

Retried (exponential backoff, full jitter, Retry-After honoured as a minimum): 429 per-minute
and concurrency limits, 500/502/503/504, timeouts, connection errors, and bodies that are not
complete JSON. Not retried: 400 (bad parameters, also an invalid key), 401/403 (key problems)
and 429 for the hourly or daily quota, which no backoff within a chunk can outlast.
The API key never appears in logs, messages or reprs: httpx puts the full URL into its own
log lines and exceptions, so those are redacted here.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import httpx

from jobs.config import SourceConfig
from jobs.errors import (
    DateRangeError,
    InputError,
    SourceError,
    SourceRequestError,
    SourceUnavailable,
)
from jobs.inputs import Location
from jobs.limits import Throttle

log = logging.getLogger(__name__)

API_PATH = "/v1/air-quality"
# What each domain holds, from the "Data Sources" table of https://open-meteo.com/en/docs/air-quality-api:
# CAMS European air quality reanalysis from 2013 (forecast: 4 days ahead); CAMS global atmospheric
# composition forecasts from August 2022 (5 days ahead). `auto` combines both: every location has
# data only from the global domain's first day.
DOMAIN_FIRST_DAY = {"cams_europe": dt.date(2013, 1, 1), "cams_global": dt.date(2022, 8, 1),
                    "auto": dt.date(2022, 8, 1)}
DOMAIN_FORECAST_DAYS = {"cams_europe": 4, "cams_global": 5, "auto": 5}
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# 429 reasons that mean "come back in an hour / tomorrow": failing fast beats sleeping for it.
_QUOTA_EXHAUSTED = ("Hourly API request limit", "Daily API request limit")
# The longest Retry-After honoured. Open-Meteo's per-minute limit frees up within 60s, so a
# longer wait means the hourly or daily quota (answered without retry, above) or a confused proxy;
# sitting it out would hold the chunk's session and its place at the limiter for nothing. Past
# the cap the request is retried after the cap, and if refused again the attempt fails and the
# run's own retry (with its backoff) takes over.
RETRY_AFTER_CAP_S = 120.0
_HTML_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_APIKEY_IN_TEXT = re.compile(r"(apikey=)[^&\s\"'#]*", re.IGNORECASE)


def request_weight(n_locations: int, n_variables: int, n_days: int) -> float:
    """Calls one request costs against the quota: per location max(1, nVars/10 × max(1, nDays/14))."""
    return n_locations * max(1.0, n_variables / 10.0 * max(1.0, n_days / 14.0))


@dataclass
class ClientStats:
    """What the client sent and got back; a failed attempt counts, as it does for the quota."""

    # HTTP attempts sent (retries included)
    requests: int = 0
    # quota weight of those attempts (see request_weight)
    weighted_calls: float = 0.0
    # attempts that were retries of an earlier failed one
    retries: int = 0
    responses_429: int = 0
    # attempts that got no HTTP answer (timeouts, refused or dropped connections)
    transport_errors: int = 0
    # HTTP status -> count
    by_status: dict[int, int] = field(default_factory=dict)


class OpenMeteoClient:
    """Source that asks the Open-Meteo Air Quality API, `batch_size` locations per request."""

    name = "open-meteo"

    def __init__(
        self,
        *,
        base_url: str = "https://air-quality-api.open-meteo.com",
        api_key: str | None = None,
        http: httpx.Client | None = None,
        timeout_s: float = 60.0,
        max_attempts: int = 6,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
        batch_size: int = 1,
        concurrency: int = 1,
        throttle: Throttle | None = None,
        domains: str = "cams_global",
        cell_selection: str = "nearest",
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        if (max_attempts < 1 or batch_size < 1 or concurrency < 1 or timeout_s <= 0 or backoff_s < 0
                or backoff_max_s < 0):
            raise InputError("max_attempts, batch_size and concurrency must be >= 1, timeout_s > 0, backoffs >= 0")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or None
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client()
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.batch_size = batch_size
        self.concurrency = concurrency
        # asked before every HTTP attempt: the run-wide limiter (None: no limits to keep)
        self.throttle = throttle
        self.domains = domains
        self.cell_selection = cell_selection
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._lock = threading.Lock()
        self.stats = ClientStats()
        _redact_httpx_logs()

    @classmethod
    def from_config(cls, cfg: SourceConfig, throttle: Throttle | None = None) -> "OpenMeteoClient":
        """A client with the settings of a SourceConfig."""
        return cls(
            base_url=cfg.api_url, api_key=cfg.api_key, timeout_s=cfg.timeout_s, max_attempts=cfg.max_attempts,
            backoff_s=cfg.backoff_s, backoff_max_s=cfg.backoff_max_s, batch_size=cfg.batch_size,
            concurrency=cfg.request_concurrency, throttle=throttle,
            domains=cfg.domains, cell_selection=cfg.cell_selection,
        )

    @property
    def model_domain(self) -> str:
        """Open-Meteo answers for the domain asked for (`domains`); its response does not say."""
        return self.domains

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"OpenMeteoClient(base_url={self.base_url!r}, api_key={key}, batch_size={self.batch_size})"

    def __enter__(self) -> "OpenMeteoClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP client if this object created it; an injected one is the caller's."""
        if self._owns_http:
            self._http.close()

    def fetch(self, locations: Sequence[Location], start: dt.date, end: dt.date, variables: Sequence[str]) -> list[dict]:
        """One response object per location, in order; `end` is inclusive, as the API's end_date."""
        if end < start:
            raise DateRangeError(f"end date {end} is before start date {start}")
        if not variables:
            raise InputError("no hourly variables to ask open-meteo for")
        batches = [locations[i : i + self.batch_size] for i in range(0, len(locations), self.batch_size)]
        if self.concurrency == 1 or len(batches) == 1:
            answers = [self._fetch_batch(batch, start, end, variables) for batch in batches]
        else:
            with concurrent.futures.ThreadPoolExecutor(min(self.concurrency, len(batches))) as pool:
                answers = list(pool.map(lambda batch: self._fetch_batch(batch, start, end, variables), batches))
        return [item for answer in answers for item in answer]

    def _fetch_batch(
        self, batch: Sequence[Location], start: dt.date, end: dt.date, variables: Sequence[str]
    ) -> list[dict]:
        params = {
            "latitude": ",".join(repr(float(loc.latitude)) for loc in batch),
            "longitude": ",".join(repr(float(loc.longitude)) for loc in batch),
            "hourly": ",".join(variables),
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "timezone": "GMT",
            "domains": self.domains,
            "cell_selection": self.cell_selection,
        }
        if self._api_key:
            params["apikey"] = self._api_key
        weight = request_weight(len(batch), len(variables), (end - start).days + 1)
        what = f"{len(batch)} location(s) {start}..{end}"
        body = self._get_with_retries(params, weight, what)
        items = body if isinstance(body, list) else [body]
        if len(items) != len(batch) or not all(isinstance(item, dict) for item in items):
            raise SourceError(f"open-meteo answered {len(items)} object(s) for {what} "
                              f"({', '.join(loc.location_key for loc in batch)})")
        return items

    def _get_with_retries(self, params: dict[str, str], weight: float, what: str) -> object:
        url = f"{self.base_url}{API_PATH}"
        problem = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            self._count(weight=weight, retry=attempt > 1)
            log.debug("GET %s for %s (weight %.2f, attempt %d)", API_PATH, what, weight, attempt)
            retry_after: float | None = None
            status: int | None = None
            lease = self.throttle.acquire(weight) if self.throttle is not None else None
            try:
                response = self._http.get(url, params=params, timeout=self.timeout_s)
            except httpx.TimeoutException:
                problem = f"no answer within {self.timeout_s:g}s"
                self._count(transport_error=True)
            except httpx.TransportError as exc:
                # Its text can carry the URL, and so the key: keep only the error's class name.
                problem = f"connection failed ({type(exc).__name__})"
                self._count(transport_error=True)
            else:
                status = response.status_code
                self._count(status=status)
                if status == 200:
                    try:
                        return json.loads(response.content)
                    except ValueError:
                        problem = f"HTTP 200 with a body that is not complete JSON ({len(response.content)} bytes)"
                else:
                    reason = self._redact(_reason(response))
                    problem = f"HTTP {status}: {reason}"
                    if status == 400:
                        raise SourceRequestError(
                            f"open-meteo refused the request (HTTP 400): {reason}", status=400, reason=reason
                        )
                    if status in (401, 403):
                        raise SourceRequestError(
                            f"open-meteo rejected the API key (HTTP {status}): {reason}; "
                            "check the API key (source.api_key) and that the API URL is the customer- host",
                            status=status, reason=reason,
                        )
                    if status == 429 and reason.startswith(_QUOTA_EXHAUSTED):
                        # the hourly quota comes back within the hour (a later retry of the chunk
                        # may pass); the daily one not before tomorrow
                        raise SourceUnavailable(f"open-meteo quota used up (HTTP 429): {reason}",
                                                permanent=reason.startswith(_QUOTA_EXHAUSTED[1]))
                    if status not in RETRY_STATUSES:
                        raise SourceRequestError(
                            f"open-meteo answered HTTP {status} for {self.base_url}{API_PATH}: {reason}",
                            status=status, reason=reason,
                        )
                    retry_after = _retry_after_s(response)
            finally:
                if lease is not None:
                    self.throttle.release(lease, status)  # the limiter charts 429s per minute
            if attempt == self.max_attempts:
                break
            delay = self._backoff(attempt, retry_after)
            log.warning("open-meteo %s for %s; retry %d/%d in %.2fs",
                        problem, what, attempt, self.max_attempts - 1, delay)
            self._sleep(delay)
        raise SourceUnavailable(
            f"open-meteo failed {self.max_attempts} time(s) for {what}; last problem: {problem}"
        )

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter on an exponential cap; a Retry-After is a floor, not a suggestion, up to
        RETRY_AFTER_CAP_S."""
        cap = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
        delay = self._rng.uniform(0.0, cap)
        return max(delay, min(retry_after, RETRY_AFTER_CAP_S)) if retry_after is not None else delay

    def _count(self, *, weight: float = 0.0, retry: bool = False, status: int | None = None,
               transport_error: bool = False) -> None:
        with self._lock:
            s = self.stats
            if weight:
                s.requests += 1
                s.weighted_calls += weight
            s.retries += int(retry)
            s.transport_errors += int(transport_error)
            if status is not None:
                s.by_status[status] = s.by_status.get(status, 0) + 1
                s.responses_429 += int(status == 429)

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return _APIKEY_IN_TEXT.sub(r"\1***", text)


def check_dates(domains: str, start: dt.date, end: dt.date, today: dt.date | None = None) -> None:
    """Refuse (DateRangeError, one line) a range the domain has no data for: before its first day,
    or past its forecast horizon."""
    first, ahead = DOMAIN_FIRST_DAY.get(domains), DOMAIN_FORECAST_DAYS.get(domains)
    if first is None:
        raise InputError(f"open-meteo domains {domains!r} is unknown; use {', '.join(DOMAIN_FIRST_DAY)}")
    if start < first:
        raise DateRangeError(f"--start-date {start} is before the first day open-meteo's {domains} domain "
                             f"has data for ({first}); start on or after it")
    today = today or dt.datetime.now(dt.timezone.utc).date()
    horizon = today + dt.timedelta(days=ahead - 1)
    if end > horizon:
        raise DateRangeError(f"--end-date {end} is past the open-meteo {domains} forecast horizon ({ahead} days "
                             f"from today: {horizon}); end on or before it")


def _reason(response: httpx.Response) -> str:
    """The API's `reason`, or a short excerpt of a body that is not the API's error JSON."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("reason"), str):
        return body["reason"]
    text = response.content[:2000].decode("utf-8", "replace")
    # Proxies in front of the API answer 502/504 with an HTML page; its title says enough.
    title = _HTML_TITLE.search(text)
    text = " ".join((title.group(1) if title else text[:120]).split())
    return text or response.reason_phrase or "no reason given"


def _retry_after_s(response: httpx.Response) -> float | None:
    """Retry-After in seconds; the HTTP-date form is not used by Open-Meteo and is ignored."""
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


class _RedactApiKey(logging.Filter):
    """Rewrites httpx's "HTTP Request: GET <url>" log lines so the apikey value is masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "apikey=" in message.lower():
            record.msg, record.args = _APIKEY_IN_TEXT.sub(r"\1***", message), ()
        return True


def _redact_httpx_logs() -> None:
    """Install the redacting filter on httpx's logger once per process."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactApiKey) for f in logger.filters):
        logger.addFilter(_RedactApiKey())
