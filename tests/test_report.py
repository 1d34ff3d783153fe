"""The run report page: made by the real loop and ledger from an in-memory run with a retried chunk,
a failed one, standbys and a real source limiter, then opened in a real headless Chromium.

The browser is Debian's chromium and chromedriver (`cluster/browser.sh install`, run by `make
services`); Selenium is pointed at both and must never start Selenium Manager (it would download
a browser). About 10 s, most of it Chromium starting once for the module.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from jobs.config import CatalogConfig, PipelineConfig, Settings, SourceConfig
from jobs.dates import DateRange
from jobs.limits import RateLimiter, SourceLimits
from jobs.sources.openmeteo import ClientStats
from jobs.tasks import Task
from ray_backfill.executors.base import TaskResult
from ray_backfill.ledger import HISTORY_KEPT, ChunkStatus, TaskRecord, attempt_entry
from ray_backfill.progress import Progress
from ray_backfill.report import HIDDEN, MAX_LABEL_ROWS, attempts_of, build, pack_lanes, render_html
from ray_backfill.loop import RetryPolicy
from ray_backfill.request import BackfillRequest
from ray_backfill.runner import run_backfill
from tests.helpers import ROOT
from tests.inmemory import Call, InMemoryExecutor, scripted

BROWSER_SCRIPT = ROOT / "cluster" / "browser.sh"
BRONZE = ["bronze-2024-01", "bronze-2024-02", "bronze-2024-03", "bronze-2024-04"]
PASSWORD, API_KEY = "pw-Zq81-never-shown", "key-Vb27-never-shown"
NODES = ["5f1c0a7e9b2d4c6a8e0f1a2b3c4d", "9a8b7c6d5e4f3a2b1c0d9e8f7a6b"]


@dataclasses.dataclass
class RealisticExecutor(InMemoryExecutor):
    """The in-memory executor, with what a Ray attempt reports: phases, node, standby, peak memory, and
    source counters from requests that took leases from a real RateLimiter (a 429 on the retried chunk).

    The limiter's clock moves 20 s per request, so its per-minute use spans several minutes."""

    limiter: RateLimiter | None = None
    began: dict[int, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        clock = iter(range(0, 100_000, 20))
        self.limiter = RateLimiter(SourceLimits(per_minute=12, max_in_flight=2),
                                   clock=lambda: 1_767_225_600.0 + next(clock))

    def start(self, task: Task) -> Call:
        call = super().start(task)
        self.began[id(call)] = time.time() - 0.02  # a standby's session came up before its turn
        time.sleep(0.01)
        return call

    def wait(self, handles, timeout_s):
        time.sleep(0.005)
        done = super().wait(handles, timeout_s)
        for call, result in done:
            self._realistic(call, result)
        return done

    def _realistic(self, call: Call, result: TaskResult) -> None:
        task = call.task
        began, now = self.began[id(call)], time.time()
        standby = task.stage == "bronze" and task.attempt == 1 and task.task_id != BRONZE[0]
        result.started_at = round(began + (0.02 if standby else 0.0), 3)
        result.ended_at = round(now, 3)
        result.node_id = NODES[len(self.started) % 2]
        result.standby, result.peak_rss_mb = standby, 600.0 + 25 * len(self.started)
        stats = ClientStats()
        if task.stage == "bronze":
            for _ in range(3):
                lease = self.limiter.try_acquire(f"{task.task_id}#{task.attempt}", 1.7).lease_id
                status = 429 if task.task_id == BRONZE[1] and task.attempt == 1 else 200
                self.limiter.release(lease, status)
                stats.requests += 1
                stats.weighted_calls += 1.7
                stats.responses_429 += status == 429
        if result.outcome is not None:
            # a standby's session was up 10 ms before its turn came; a cold one comes up a third into the attempt
            split = began + 0.01 if standby else began + (now - began) / 3
            result.outcome.phases = {"session_start": [round(began, 3), round(split, 3)],
                                     "session_stop": [round(now - 0.002, 3), round(now, 3)]}
            if task.stage == "bronze":
                mid = (result.started_at + now) / 2  # the fetch begins with the task, at its turn
                result.outcome.phases.update(fetch=[result.started_at, round(mid, 3)],
                                             write=[round(mid, 3), round(now - 0.002, 3)])
                result.outcome.source_stats = dataclasses.asdict(stats)

    def limiter_snapshot(self) -> dict:
        return self.limiter.snapshot()


def _request(tmp_path: Path, **kwargs) -> BackfillRequest:
    # secrets in the settings: the ledger drops them, and the page must not show them either
    settings = Settings(catalog=CatalogConfig(warehouse=str(tmp_path / "wh"), password=PASSWORD),
                        source=SourceConfig(api_key=API_KEY), pipeline=PipelineConfig(locations=("hanoi", "hcmc")))
    return BackfillRequest(settings=settings, date_range=DateRange(dt.date(2024, 1, 1), dt.date(2024, 4, 30)),
                           **{"retries": 2, **kwargs})


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    """A run whose second chunk fails once (a 429, then it succeeds) and whose last fails three times."""
    tmp = tmp_path_factory.mktemp("report")
    executor = RealisticExecutor(slots=2, polls=3, behaviour=scripted({BRONZE[1]: ["fail"], BRONZE[3]: ["fail"] * 3}))
    lines: list[str] = []
    record = run_backfill(_request(tmp), echo=lines.append, progress=Progress(lines.append, tty=False),
                          executor=executor, retry=RetryPolicy(base_s=0.001, cap_s=0.001))
    page = tmp / "wh" / "_ray_backfill" / "runs" / record.run_id / "report.html"
    return record, lines, page


def test_every_run_end_writes_report_html_next_to_report_json_and_names_it_last(failed_run):
    record, lines, page = failed_run
    assert record.outcome == "failed"
    assert page.is_file() and (page.parent / "report.json").is_file()
    assert any(line.startswith(f"run {record.run_id} failed after") for line in lines), lines[-8:]
    assert f"  report:  {page}" in lines
    text = page.read_text()
    assert PASSWORD not in text and API_KEY not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing fetched: opens offline


def test_the_page_goes_through_the_ledgers_storage_also_to_a_uri(failed_run, tmp_path):
    from ray_backfill.ledger import open_ledger

    record, _, page = failed_run
    uri = (tmp_path / "ledgers").as_uri()
    ledger = open_ledger(CatalogConfig(warehouse="hdfs://nn:8020/wh", ledger_dir=uri))
    assert ledger.filesystem is not None and not ledger.has_report_html(record.run_id)
    assert ledger.save_report_html(record.run_id, page.read_text()) == f"{uri}/{record.run_id}/report.html"
    assert ledger.has_report_html(record.run_id)
    written = tmp_path / "ledgers" / record.run_id
    assert [p.name for p in written.iterdir()] == ["report.html"] and written.joinpath("report.html").read_text() == \
        page.read_text()


def test_status_names_the_report(failed_run, capsys):
    from ray_backfill.cli import main

    record, _, page = failed_run
    assert main(["status", record.run_id, "--warehouse", str(page.parents[3])]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"report: {page}"


def test_the_ledger_keeps_every_attempt_that_did_not_succeed(failed_run):
    record = failed_run[0]
    history = {t.task_id: [(h["attempt"], h["status"]) for h in t.history] for t in record.tasks}
    assert history[BRONZE[1]] == [(1, "failed")]
    assert history[BRONZE[3]] == [(1, "failed"), (2, "failed"), (3, "failed")]
    assert history[BRONZE[0]] == history["prepare"] == [] and record.task("silver").status == ChunkStatus.PENDING
    drawn = attempts_of({"tasks": [t.to_json() for t in record.tasks]})
    # prepare, a success of each chunk but the last, the retried one's failure, the last one's 3 failures
    assert len(drawn) == 1 + 3 + 1 + 3
    assert all(a.ended_at >= a.started_at and a.node in NODES for a in drawn)
    assert [a.standby for a in drawn if a.task_id == BRONZE[2]] == [True]
    assert sum(a.phases.get("standby") is not None for a in drawn) >= 1  # its session waited for its turn


def test_an_attempts_history_stays_bounded():
    task = TaskRecord(BRONZE[0], "bronze", "2024-01-01", "2024-02-01")
    for n in range(1, 3 * HISTORY_KEPT):
        task.log_attempt(attempt_entry(n, "failed", 1.0, 2.0, error="x" * 1000))
    assert [h["attempt"] for h in task.history] == list(range(2 * HISTORY_KEPT, 3 * HISTORY_KEPT))
    assert all(len(h["error"]) == 200 for h in task.history)


def test_lanes_never_overlap_and_are_as_few_as_the_most_at_once():
    spans = [(0, 10), (2, 5), (5, 8), (8, 12), (10, 11), (3, 4), (20, 21)]
    lanes = pack_lanes(spans)
    by_lane: dict[int, list] = {}
    for span, lane in zip(spans, lanes):
        by_lane.setdefault(lane, []).append(span)
    for mine in by_lane.values():
        mine.sort()
        assert all(a[1] <= b[0] for a, b in zip(mine, mine[1:])), mine
    assert max(lanes) + 1 == 3  # at t=3: (0,10), (2,5), (3,4)
    assert lanes[0] == 0 and lanes[6] == 0  # the first free lane is taken
    assert pack_lanes([(1, 2), (2, 3), (3, 4)]) == [0, 0, 0]  # back to back share a lane
    assert pack_lanes([]) == []


def test_a_run_of_many_chunks_keeps_a_bar_each_and_a_bounded_page():
    """500 daily chunks on two slots: every attempt a bar, labels that fit in no row left to the tooltip."""
    t0, tasks = 1_767_225_600.0, []
    for i in range(500):
        start = t0 + (i // 2) * 4.0
        tasks.append({"task_id": f"bronze-d{i:03d}", "stage": "bronze", "status": "succeeded", "attempts": 1,
                      "rows": 24, "seconds": 4.0, "node_id": NODES[0], "peak_rss_mb": 500.0 + i,
                      "metrics": {"started_at": start, "ended_at": start + 3.9,
                                  "phases": {"session_start": [start, start + 1], "write": [start + 1, start + 3.9]}}})
    text = render_html({"run_id": "20260101T000000Z-abc123", "outcome": "succeeded", "tasks": tasks,
                        "stage_seconds": {"total": 1000.0}, "finished_at": "2026-01-01T00:16:41+00:00"})
    assert text.count('class="bar"') == 500 and text.count('class="mem"') == 500
    height = float(re.search(r'id="timeline" class="chart" viewBox="0 0 \d+ ([\d.]+)"', text).group(1))
    assert height < 2 * (22 + 13 * MAX_LABEL_ROWS + 12) + 100  # two lanes of at most MAX_LABEL_ROWS text rows
    assert 0 < text.count('class="label succeeded"') < 500
    # a resumed run's page draws this driver's attempts: those that ended before it began are left out, and said so
    resumed = render_html({"run_id": "20260101T000000Z-abc123", "outcome": "succeeded", "tasks": tasks,
                           "stage_seconds": {"total": 500.0}, "finished_at": "2026-01-01T00:16:41+00:00"})
    assert 0 < resumed.count('class="bar"') < 500 and "ran in an earlier session of this run" in resumed


def test_secrets_that_slip_into_the_report_data_are_hidden(failed_run):
    record = failed_run[0]
    settings = {**record.request["settings"]}
    settings["catalog"] = {**settings["catalog"], "password": PASSWORD, "uri": f"jdbc:postgresql://db/lh?password={PASSWORD}",
                           "properties": [["s3.secret-access-key", PASSWORD], ["io-impl", "S3FileIO"]]}
    settings["source"] = {**settings["source"], "api_key": API_KEY, "api_url": f"https://u:{API_KEY}@example.org"}
    text = render_html({**record.to_json(), "settings": settings})
    assert PASSWORD not in text and API_KEY not in text
    assert HIDDEN in text and "S3FileIO" in text and "jdbc:postgresql://db/lh" in text


def test_text_from_the_ledger_is_escaped(failed_run):
    record = failed_run[0]
    data = record.to_json()
    began = data["tasks"][1]["metrics"]["started_at"]
    data["tasks"][1]["history"] = [attempt_entry(1, "failed", began - 0.5, began - 0.1,
                                                 error="<script>alert(1)</script>")]
    data["error"] = "<img src=x onerror=alert(2)>"
    text = render_html(data)
    assert "<script>alert" not in text and "<img src=x" not in text and "&lt;script&gt;alert(1)" in text


def _two_tasks(error: str = "HTTP 429 from the source", task_id: str = BRONZE[1]) -> dict:
    """A record of two chunks: the first retried once and then committed, the second failed."""
    t0 = 1_767_225_600.0
    return {"run_id": "20260101T000000Z-abc123", "outcome": "failed", "created_at": "2026-01-01T00:00:00+00:00",
            "request": {"start_date": "2024-01-01", "end_date": "2024-02-29", "granularity": "monthly",
                        "executor": "ray"},
            "settings": {"source": {"api_url": "http://fake:8080", "note": error}},
            "stage_seconds": {"prepare": 2.0, "bronze": 70.0},
            "tasks": [{"task_id": BRONZE[0], "stage": "bronze", "status": "succeeded", "attempts": 2, "rows": 1200,
                       "seconds": 30.0, "node_id": NODES[0], "peak_rss_mb": 812.4,
                       "history": [attempt_entry(1, "failed", t0, t0 + 10, node_id=NODES[1], error="timed out")],
                       "metrics": {"started_at": t0 + 20, "ended_at": t0 + 50, "tables": {"bronze": 1200},
                                   "phases": {"fetch": [t0 + 20, t0 + 40], "write": [t0 + 40, t0 + 50]}}},
                      {"task_id": task_id, "stage": "bronze", "status": "failed", "attempts": 1, "rows": 0,
                       "seconds": 5.0, "node_id": NODES[1], "error": error,
                       "history": [attempt_entry(1, "failed", t0 + 1, t0 + 6, node_id=NODES[1], error=error)]}]}


def test_the_model_is_built_from_the_record_without_markup():
    m = build(_two_tasks())
    assert (m.run_id, m.outcome, m.start_date, m.end_date, m.finished) == (
        "20260101T000000Z-abc123", "failed", "2024-01-01", "2024-02-29", "—")
    assert m.cards == [("wall time", "0.0s"), ("bronze chunks", "1 / 2 committed"), ("attempts", "3 (2 not ok)"),
                       ("bronze rows", "1,200"), ("peak memory", "812 MiB")]
    assert [(a.task_id, a.attempt, a.status) for a in m.attempts] == [
        (BRONZE[0], 1, "failed"), (BRONZE[1], 1, "failed"), (BRONZE[0], 2, "succeeded")]
    assert [(t.task_id, t.status, t.attempts, t.rows, t.peak_mb, t.node, t.error) for t in m.tasks] == [
        (BRONZE[0], "succeeded", "2 (1 not ok)", "1,200", "812", NODES[0][:12], ""),
        (BRONZE[1], "failed", "1 (1 not ok)", "0", "—", NODES[1][:12], "HTTP 429 from the source")]
    assert [(b.task_id, b.peak_rss_mb) for b in m.memory] == [(BRONZE[0], 812.4)]
    assert [(r.name, r.rows_now, r.written, r.percent) for r in m.tables] == [("bronze", "—", "1,200", 100.0)]
    assert not m.tables_from_gold and m.source is None and m.earlier_tasks == 0
    assert m.stage_seconds == [("prepare", 2.0), ("bronze", 70.0)]
    assert dict(m.settings)["source"] == [("api_url", "http://fake:8080"), ("note", "HTTP 429 from the source")]
    assert "<" not in repr(m)  # plain text: escaping is the template's


def test_a_hostile_task_error_and_id_are_escaped_everywhere_the_page_shows_them():
    error = """</td></tr><script>alert("x&y")</script><img src='z'>"""
    text = render_html(_two_tasks(error=error, task_id="bronze-<b>2</b>"))
    assert "<script>alert" not in text and "<img src=" not in text and "<b>2</b>" not in text
    # as html.escape(quote=True) writes it, as the page always did: &quot; and &#x27;, not markupsafe's &#34; &#39;
    escaped = ("&lt;/td&gt;&lt;/tr&gt;&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;"
               "&lt;img src=&#x27;z&#x27;&gt;")
    assert text.count(f'<td class="err">{escaped}</td>') == 1  # the task table
    assert f'<td class="mono">{escaped}</td>' in text  # the settings
    assert f"error: {escaped}" in text  # the failed attempt's tooltip
    task = "bronze-&lt;b&gt;2&lt;/b&gt;"
    assert f'data-task="{task}"' in text and f'<td class="mono">{task}</td>' in text
    assert text.count("<script>") == 1  # the page's own


# --- the page in a real browser ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(tmp_path_factory, monkeymodule):
    """Headless Chromium through Debian's chromedriver; Selenium Manager may not run. Its processes are
    checked gone after the module."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    done = subprocess.run([str(BROWSER_SCRIPT), "paths"], capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stderr.strip()} (or `make services`)"
    chromium, chromedriver = done.stdout.split()

    def no_downloads(*args, **kwargs):
        raise AssertionError("Selenium Manager was asked for a browser; it would download one")

    monkeymodule.setattr(SeleniumManager, "binary_paths", no_downloads)
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--user-data-dir={profile}", "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    processes = [psutil.Process(driver.service.process.pid)]
    processes += processes[0].children(recursive=True)
    try:
        yield driver
    finally:
        driver.quit()
        gone, alive = psutil.wait_procs(processes, timeout=15)
        marked = [p.pid for p in psutil.process_iter(["cmdline"]) if str(profile) in " ".join(p.info["cmdline"] or [])]
        assert not alive and not marked, f"browser processes left: {[p.pid for p in alive]} {marked}"


@pytest.fixture(scope="module")
def monkeymodule():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _severe(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.mark.integration
def test_the_error_check_sees_a_page_that_throws(browser, tmp_path):
    page = tmp_path / "throws.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>throw new Error('deliberate')</script></body></html>")
    browser.get(page.as_uri())
    assert any("deliberate" in m for m in _severe(browser))


@pytest.mark.integration
def test_the_report_renders_in_chromium_without_errors_and_shows_every_attempt(browser, failed_run):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    record, _, page = failed_run
    browser.get(page.as_uri())
    assert _severe(browser) == []
    assert browser.title.startswith(f"Run {record.run_id}")
    timeline = browser.find_element(By.ID, "timeline")
    assert timeline.size["width"] > 800
    labels = [t.text for t in timeline.find_elements(By.CSS_SELECTOR, "text.label") if t.is_displayed()]
    for task in record.tasks:
        if task.attempts:
            assert any(label.startswith(task.task_id) for label in labels), (task.task_id, labels)
    assert "silver" not in " ".join(labels)  # it never ran
    bars = timeline.find_elements(By.CSS_SELECTOR, "g.attempt rect.bar")
    attempts = sum(t.attempts for t in record.tasks)
    assert len(bars) == attempts == 1 + 4 + 1 + 2  # one per attempt: chunk 2 twice, chunk 4 three times
    groups = timeline.find_elements(By.CSS_SELECTOR, "g.attempt")
    assert sorted((g.get_attribute("data-task"), g.get_attribute("data-attempt"), g.get_attribute("data-status"))
                  for g in groups if g.get_attribute("data-status") != "succeeded") == [
        (BRONZE[1], "1", "failed"), (BRONZE[3], "1", "failed"), (BRONZE[3], "2", "failed"), (BRONZE[3], "3", "failed")]
    assert {node[:10] for node in NODES} <= {t.text.removeprefix("node ") for t in
                                             timeline.find_elements(By.CSS_SELECTOR, "text.node")}
    assert timeline.find_elements(By.CSS_SELECTOR, "rect.phase.standby")
    # hover details: the tooltip shows the attempt's error
    failed = next(g for g in groups if g.get_attribute("data-task") == BRONZE[3])
    ActionChains(browser).move_to_element(failed.find_element(By.CSS_SELECTOR, "rect.bar")).perform()
    tip = browser.find_element(By.ID, "tip")
    assert tip.is_displayed() and f"scripted failure of {BRONZE[3]}" in tip.text
    # memory: a bar per task that ran; the source: calls per minute against the 12/min limit, and the 429
    assert len(browser.find_elements(By.CSS_SELECTOR, "#memory g.mem")) == 5
    calls = browser.find_element(By.ID, "calls")
    assert len(calls.find_elements(By.CSS_SELECTOR, "rect.col")) == len(record.source["limiter"]["per_minute"]) > 2
    assert "limit 12 calls/min" in calls.text
    counts = [int(r.text) for r in calls.find_elements(By.CSS_SELECTOR, "text.count")]
    assert sum(counts) == 3 == sum(m["responses_429"] for m in record.source["limiter"]["per_minute"])
    body = browser.find_element(By.TAG_NAME, "body").text
    assert PASSWORD not in body and API_KEY not in body
    rows = browser.find_elements(By.CSS_SELECTOR, "#tables tbody tr")
    written = {r.text.split()[0]: r.text.split()[1:3] for r in rows}
    assert written["bronze"] == ["—", "300"]  # gold never ran; three chunks wrote 100 rows each
    assert _severe(browser) == []
