"""A local HTTP stand-in for the Open-Meteo Air Quality API, serving the synthetic source.

It speaks the real wire format (one object for one coordinate, a list with `location_id` from
the second element on for several), validates parameters like the API with its 400 reasons,
and enforces the free tier's shape: weighted calls per minute/hour/day in clock windows (429
with the real reasons) and a cap on requests in flight (429 "Too many concurrent requests").
Calls the API would process count against the quota even when they fail; calls the limiter
turns away do not (the real limiter checks before it counts).

Faults are injected deterministically, one per request from a queue (`inject("503", ...)`), or
at random with a seeded probability. Kinds: "500", "502", "503", "504", "429",
"429-retry-after:<s>", "timeout" (answer only after `timeout_sleep_s`), "truncated" (valid
JSON cut in half) and "malformed" (not JSON).

Broken data, which the real API does not send, is set per location and served in every answer
for it until `reset()` (`damage("hanoi", "drop-last-hours:72")`): "empty-time" (an empty time
axis and empty value arrays), "drop-last-hours:<n>" (the last n hours of the answer cut off),
"drop-variable:<name>" (a requested variable left out of `hourly`) and "repeat-hour:<i>" (the
hour at index i sent twice, the copy right after it).

Command: `python -m jobs.sources.fake_server --port 8765 --latency 0.4 --calls-per-minute 600
--max-in-flight 1` prints its URL and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Sequence
from urllib.parse import parse_qs, urlsplit

from jobs.inputs import Location
from jobs.sources import HOURLY_VARIABLES
from jobs.sources.openmeteo import API_PATH, request_weight
from jobs.sources.synthetic import SyntheticSource

log = logging.getLogger(__name__)

FAULT_KINDS = ("500", "502", "503", "504", "429", "timeout", "truncated", "malformed")
FIRST_DATE = dt.date(2013, 1, 1)
DOMAINS = ("auto", "cams_global", "cams_europe")
CELL_SELECTIONS = ("land", "sea", "nearest")
LIMIT_REASONS = {
    "minute": "Minutely API request limit exceeded. Please try again in one minute.",
    "hour": "Hourly API request limit exceeded. Please try again in the next hour.",
    "day": "Daily API request limit exceeded. Please try again tomorrow.",
}
_WINDOW_S = {"minute": 60, "hour": 3600, "day": 86400}
_JSON = {"Content-Type": "application/json; charset=utf-8"}
_RETRY_AFTER = re.compile(r"^429-retry-after:(\d+(?:\.\d+)?)$")
_DAMAGE = re.compile(r"^(empty-time|drop-last-hours:\d+|drop-variable:[a-z0-9_]+|repeat-hour:\d+)$")
# Coordinates closer than this to a known location are served as that location.
_MATCH_DEG = 0.01


@dataclass
class ServerStats:
    """What the server saw; `max_in_flight` is the most requests it held open at once."""

    requests: int = 0
    weighted_calls: float = 0.0
    by_status: dict[int, int] = field(default_factory=dict)
    max_in_flight: int = 0
    faults: int = 0


class _Refusal(Exception):
    """An answer other than 200: status, reason, extra headers."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


class FakeOpenMeteoServer:
    """A real HTTP server on 127.0.0.1 in a background thread; use as a context manager."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        source: SyntheticSource | None = None,
        locations: Sequence[Location] = (),
        latency_s: float = 0.0,
        calls_per_minute: float | None = None,
        calls_per_hour: float | None = None,
        calls_per_day: float | None = None,
        max_in_flight: int | None = None,
        fault_rate: float = 0.0,
        fault_kinds: Sequence[str] = ("500", "503", "timeout", "truncated", "malformed"),
        fault_seed: int = 0,
        timeout_sleep_s: float = 2.0,
        api_key_required: bool = False,
        api_keys: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ):
        for kind in fault_kinds:
            _check_fault(kind)
        self.host, self._port = host, port
        self.source = source or SyntheticSource()
        self.locations = tuple(locations)
        self.latency_s = latency_s
        self.limits = {"minute": calls_per_minute, "hour": calls_per_hour, "day": calls_per_day}
        self.max_in_flight = max_in_flight
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.timeout_sleep_s = timeout_sleep_s
        self.api_key_required = api_key_required or bool(api_keys)
        self.api_keys = frozenset(api_keys)
        self.clock = clock
        self._lock = threading.Lock()
        self._faults: collections.deque[str] = collections.deque()
        self._damage: dict[str, str] = {}
        self._fault_rng = random.Random(fault_seed)
        self._usage: dict[str, tuple[int, float]] = {}
        self._open_count = 0  # requests the server holds open, admitted or not
        self._serving = 0  # admitted requests being served
        self._stats = ServerStats()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "FakeOpenMeteoServer":
        """Bind and serve in a background thread; returns self."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = ThreadingHTTPServer((self.host, self._port), _handler_for(self))
        # Join handler threads on close, so nothing outlives stop().
        self._httpd.daemon_threads = False
        self._httpd.block_on_close = True
        # A short poll interval: shutdown() waits for the serve loop's next poll.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-open-meteo", daemon=True)
        self._thread.start()
        log.info("fake open-meteo serving on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, wake sleeping handlers, and join every thread."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd, self._thread = None, None

    def __enter__(self) -> "FakeOpenMeteoServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321 (the client appends /v1/air-quality)."""
        if self._httpd is None:
            raise RuntimeError("the fake server is not running; call start() or use it in a with block")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- control ---------------------------------------------------------------------------

    def inject(self, *faults: str) -> None:
        """Queue faults; each request the limits let through takes the next one, in order."""
        for kind in faults:
            _check_fault(kind)
        with self._lock:
            self._faults.extend(faults)

    def damage(self, location_key: str, kind: str) -> None:
        """Serve broken data for `location_key` in every answer from now on (kinds: module docstring)."""
        if not _DAMAGE.match(kind):
            raise ValueError(f"unknown damage {kind!r}; use empty-time, drop-last-hours:<n>, "
                             "drop-variable:<name> or repeat-hour:<i>")
        with self._lock:
            self._damage[location_key] = kind

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    @property
    def serving(self) -> int:
        """Requests admitted and not yet answered."""
        with self._lock:
            return self._serving

    @property
    def stats(self) -> ServerStats:
        """A snapshot of the counters."""
        with self._lock:
            return replace(self._stats, by_status=dict(self._stats.by_status))

    def reset(self) -> None:
        """Zero the counters and quota windows; drop queued faults and damage."""
        with self._lock:
            self._stats, self._usage = ServerStats(), {}
            self._faults.clear()
            self._damage.clear()

    # -- request handling (called from handler threads) ------------------------------------

    def _open(self) -> None:
        with self._lock:
            self._stats.requests += 1
            self._open_count += 1
            self._stats.max_in_flight = max(self._stats.max_in_flight, self._open_count)

    def _admit(self) -> bool:
        """Take a serving slot if fewer than max_in_flight requests are being served."""
        with self._lock:
            if self.max_in_flight is not None and self._serving >= self.max_in_flight:
                return False
            self._serving += 1
            return True

    def _close(self, admitted: bool) -> None:
        with self._lock:
            self._open_count -= 1
            self._serving -= int(admitted)

    def _record(self, status: int, weight: float) -> None:
        """Count an answer; its weight goes into every quota window."""
        with self._lock:
            self._stats.by_status[status] = self._stats.by_status.get(status, 0) + 1
            self._stats.weighted_calls += weight
            if weight:
                now = self.clock()
                for period in self.limits:
                    window = int(now // _WINDOW_S[period])
                    start, used = self._usage.get(period, (window, 0.0))
                    self._usage[period] = (window, (used if start == window else 0.0) + weight)

    def _over_limit(self) -> str | None:
        """The first quota already used up in its current clock window, if any."""
        with self._lock:
            now = self.clock()
            for period, limit in self.limits.items():
                window, used = self._usage.get(period, (None, 0.0))
                if limit is not None and window == int(now // _WINDOW_S[period]) and used >= limit:
                    return period
        return None

    def _next_fault(self) -> str | None:
        with self._lock:
            if self._faults:
                fault = self._faults.popleft()
            elif self.fault_rate and self._fault_rng.random() < self.fault_rate:
                fault = self._fault_rng.choice(self.fault_kinds)
            else:
                return None
            self._stats.faults += 1
            return fault

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def handle(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for one GET."""
        self._open()
        admitted = False
        try:
            if not self._admit():
                return self._answer(_error(429, "Too many concurrent requests"), 0.0)
            admitted = True
            url = urlsplit(path)
            if url.path != API_PATH:
                return self._answer(_error(404, f"Not found: {url.path}"), 0.0)
            period = self._over_limit()
            if period is not None:
                return self._answer(_error(429, LIMIT_REASONS[period]), 0.0)
            fault = self._next_fault()
            self._wait(self.latency_s)
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            try:
                request = _parse(query, self.api_key_required, self.api_keys)
            except _Refusal as refusal:
                return self._answer(_error(refusal.status, refusal.reason, refusal.headers), 1.0)
            weight = request_weight(len(request["coords"]), len(request["hourly"]), request["days"])
            if fault is not None:
                return self._answer(self._faulty(fault, request), weight)
            return self._answer((200, _JSON, self._body(request)), weight)
        except Exception:  # a bug here must still answer, or the client hangs until its timeout
            log.exception("fake open-meteo failed on %s", _redact(path))
            return self._answer(_error(500, "Internal Server Error"), 0.0)
        finally:
            self._close(admitted)

    def _answer(self, answer: tuple[int, dict[str, str], bytes], weight: float) -> tuple[int, dict[str, str], bytes]:
        self._record(answer[0], weight)
        return answer

    def _faulty(self, fault: str, request: dict) -> tuple[int, dict[str, str], bytes]:
        match = _RETRY_AFTER.match(fault)
        if match:
            return _error(429, LIMIT_REASONS["minute"], {"Retry-After": match.group(1)})
        if fault == "429":
            return _error(429, LIMIT_REASONS["minute"])
        if fault == "500":
            return _error(500, "Internal Server Error")
        if fault in ("502", "503", "504"):
            # What the proxy in front of the API sends: HTML, not the API's JSON.
            title = {"502": "502 Bad Gateway", "503": "503 Service Temporarily Unavailable",
                     "504": "504 Gateway Time-out"}[fault]
            html = f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center></body></html>"
            return int(fault), {"Content-Type": "text/html"}, html.encode()
        body = self._body(request)
        if fault == "timeout":
            self._wait(self.timeout_sleep_s)
            return 200, _JSON, body
        if fault == "truncated":
            return 200, _JSON, body[: len(body) // 2]
        return 200, _JSON, b"<html>upstream error</html>"

    def _body(self, request: dict) -> bytes:
        objects = []
        for i, (lat, lon) in enumerate(request["coords"]):
            key = self._location_key(lat, lon)
            obj = self.source.response(key, lat, lon, request["start"], request["end"], request["hourly"])
            with self._lock:
                damage = self._damage.get(key)
            if damage is not None:
                obj = _damaged(obj, damage)
            if i:
                obj = {**obj, "location_id": i}
            objects.append(obj)
        payload: object = objects if len(objects) > 1 else objects[0]
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    def _location_key(self, lat: float, lon: float) -> str:
        for loc in self.locations:
            if abs(loc.latitude - lat) < _MATCH_DEG and abs(loc.longitude - lon) < _MATCH_DEG:
                return loc.location_key
        return f"{lat:.4f}_{lon:.4f}"


def _damaged(obj: dict, kind: str) -> dict:
    """A response object with its `hourly` broken as `kind` says; still the real wire shape."""
    hourly, units = dict(obj["hourly"]), dict(obj["hourly_units"])
    name, _, arg = kind.partition(":")
    if name == "empty-time":
        hourly = {k: [] for k in hourly}
    elif name == "drop-last-hours":
        keep = max(0, len(hourly["time"]) - int(arg))
        hourly = {k: v[:keep] for k, v in hourly.items()}
    elif name == "drop-variable":
        hourly.pop(arg, None)
        units.pop(arg, None)
    else:  # repeat-hour
        i = int(arg)
        hourly = {k: v[: i + 1] + v[i : i + 1] + v[i + 1 :] for k, v in hourly.items()}
    return {**obj, "hourly_units": units, "hourly": hourly}


def _parse(query: dict[str, str], key_required: bool, keys: frozenset[str]) -> dict:
    """The request's coordinates, dates and variables, or the 4xx the real API gives."""
    if key_required:
        if not query.get("apikey"):
            raise _Refusal(401, "API key required. Please add &apikey= to the URL.")
        if keys and query["apikey"] not in keys:
            raise _Refusal(400, "The supplied API key is invalid.")
    lats, lons = _floats(query, "latitude"), _floats(query, "longitude")
    if len(lats) != len(lons):
        raise _Refusal(400, "Parameter 'latitude' and 'longitude' must have the same number of elements")
    for lat in lats:
        if not -90 <= lat <= 90:
            raise _Refusal(400, f"Latitude must be in range of -90 to 90°. Given: {lat}.")
    for lon in lons:
        if not -180 <= lon <= 180:
            raise _Refusal(400, f"Longitude must be in range of -180 to 180°. Given: {lon}.")
    hourly = [v for v in query.get("hourly", "").split(",") if v]
    for variable in hourly:
        if variable not in HOURLY_VARIABLES:
            raise _Refusal(400, "Cannot initialize VariableOrDerived<CamsVariable, CamsVariableDerived> "
                                f"from invalid String value {variable}.")
    if not hourly:
        raise _Refusal(400, "Parameter 'hourly' is required (this fake serves hourly data only)")
    for name, enum, allowed in (("domains", "Domain", DOMAINS), ("cell_selection", "GridSelectionMode", CELL_SELECTIONS)):
        if name in query and query[name] not in allowed:
            raise _Refusal(400, f"Cannot initialize {enum} from invalid String value {query[name]}.")
    if query.get("timezone", "GMT") not in ("GMT", "UTC"):
        raise _Refusal(400, "This fake server serves timezone=GMT only")
    today = dt.datetime.now(dt.timezone.utc).date()
    last_allowed = today + dt.timedelta(days=5)
    if ("start_date" in query) != ("end_date" in query):
        raise _Refusal(400, "Both 'start_date' and 'end_date' must be set in the url")
    if "start_date" in query:
        start, end = _date(query["start_date"]), _date(query["end_date"])
    else:
        start, end = today, today + dt.timedelta(days=4)
    if end < start:
        raise _Refusal(400, "End-date must be larger or equals than start-date")
    for name, day in (("start_date", start), ("end_date", end)):
        if not FIRST_DATE <= day <= last_allowed:
            raise _Refusal(400, f"Parameter '{name}' is out of allowed range from {FIRST_DATE} to {last_allowed}")
    return {"coords": list(zip(lats, lons)), "hourly": hourly, "start": start, "end": end,
            "days": (end - start).days + 1}


def _floats(query: dict[str, str], name: str) -> list[float]:
    raw = query.get(name)
    if not raw:
        raise _Refusal(400, f"Parameter '{name}' is required")
    try:
        return [float(part) for part in raw.split(",")]
    except ValueError:
        raise _Refusal(400, f"Parameter '{name}' must be a comma-separated list of numbers. Given: {raw}") from None


def _date(raw: str) -> dt.date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        raise _Refusal(400, "Invalid date format. Make sure to use 'YYYY-MM-DD'")
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise _Refusal(400, "Invalid date") from None


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"reason": reason, "error": True}).encode()
    return status, {**_JSON, **(headers or {})}, body


def _check_fault(kind: str) -> None:
    if kind not in FAULT_KINDS and not _RETRY_AFTER.match(kind):
        raise ValueError(f"unknown fault {kind!r}; use one of {', '.join(FAULT_KINDS)} or 429-retry-after:<s>")


def _redact(text: str) -> str:
    return re.sub(r"(apikey=)[^&\s]*", r"\1***", text, flags=re.IGNORECASE)


def _handler_for(server: FakeOpenMeteoServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so no idle keep-alive thread outlives stop().
        protocol_version = "HTTP/1.0"
        server_version = "fake-open-meteo"
        # A client that connects and never sends must not block stop() for ever.
        timeout = 5

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            status, headers, body = server.handle(self.path)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout); the real server would not notice either

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
            # The request line carries the apikey: never let it reach stderr unredacted.
            log.debug("%s %s", self.address_string(), _redact(format % args))

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C."""
    from jobs.config import DATA_DIR
    from jobs.inputs import load_locations

    parser = argparse.ArgumentParser(prog="python -m jobs.sources.fake_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--calls-per-minute", type=float)
    parser.add_argument("--calls-per-hour", type=float)
    parser.add_argument("--calls-per-day", type=float)
    parser.add_argument("--max-in-flight", type=int)
    parser.add_argument("--fault-rate", type=float, default=0.0, help="probability of a random fault per request")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic data")
    parser.add_argument("--locations", default=str(DATA_DIR / "locations.jsonl"),
                        help="coordinates in this file are served as those locations")
    parser.add_argument("--api-key", action="append", default=[], help="require this apikey (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = FakeOpenMeteoServer(
        host=args.host, port=args.port, source=SyntheticSource(seed=args.seed),
        locations=load_locations(args.locations), latency_s=args.latency,
        calls_per_minute=args.calls_per_minute, calls_per_hour=args.calls_per_hour,
        calls_per_day=args.calls_per_day, max_in_flight=args.max_in_flight, fault_rate=args.fault_rate,
        api_keys=args.api_key,
    )
    with server:
        print(server.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        print(f"stopped; {server.stats}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
