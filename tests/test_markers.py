"""The test tiers guarded (tests/tiers.py, pyproject.toml's markers): `make test-fast` runs no test that
starts a process, and a test cannot slip into it by forgetting a marker. Checked on the tests this
session collected: every one of them in `make test`, the fast tier's in `make test-fast`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from tests import tiers
from tests.helpers import ROOT

FAST = "not process and not slow"


def _fast_tier_expression() -> str:
    recipe = re.search(r"^test-fast:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    return re.search(r'-m "([^"]*)"', recipe).group(1)


def test_make_test_fast_leaves_out_every_test_marked_process_or_slow():
    assert _fast_tier_expression() == FAST


def test_the_fixtures_that_start_processes_mark_their_tests():
    assert {"spark": "spark", "postgres": "postgres", "browser": "browser",
            "ray_local": "ray"}.items() <= tiers.FIXTURE_MARKERS.items()
    assert set(tiers.PROCESS_MARKERS) == {"spark", "ray", "postgres", "browser"}


def test_every_collected_test_carries_the_markers_of_what_it_starts(request):
    items = request.session.items
    assert request.node in items
    wrong = []
    for item in items:
        marks = {m.name for m in item.iter_markers()}
        wrong += [f"{item.nodeid}: uses {fixture}, not marked {marker}"
                  for fixture, marker in tiers.FIXTURE_MARKERS.items()
                  if fixture in item.fixturenames and marker not in marks]
        wrong += [f"{item.nodeid}: marked {m}, not process" for m in marks & set(tiers.PROCESS_MARKERS)
                  if "process" not in marks]
        timeout = item.get_closest_marker("timeout")
        if "slow" in marks and (timeout is None or timeout.args[0] < tiers.SLOW_TIMEOUT_S):
            wrong.append(f"{item.nodeid}: slow, its timeout {timeout}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.process
def test_the_fast_tier_selects_no_test_that_starts_a_process_or_is_slow():
    """The hook marks tests before `-m` deselects them: a fast-tier collection keeps a file's pure
    tests and leaves out those that start Spark through a fixture (marked by the hook alone)."""
    files = ["tests/test_markers.py", "tests/test_reading.py", "tests/test_ledger.py"]
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-m", _fast_tier_expression(), *files], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    kept = [line for line in done.stdout.splitlines() if "::" in line]
    assert any(line.startswith("tests/test_ledger.py::") for line in kept), kept
    # a pure test of a file whose other tests start Spark stays; those (marked by the hook only) go
    assert "tests/test_reading.py::test_the_readme_lists_the_tables_as_the_specs_say" in kept, kept
    assert not [line for line in kept if "test_the_readme_python_examples_read_the_tables" in line], kept
    assert not [line for line in kept if "fast_tier_selects" in line], "this test starts a process: not fast"


def test_a_test_not_marked_process_cannot_start_one(request):
    assert request.node.get_closest_marker("process") is None
    with pytest.raises(tiers.ProcessNotMarked, match=r"test_markers.py::test_a_test_not_marked_process_cannot_sta.*"
                                                     r"subprocess.Popen: true.*mark it @pytest.mark.process"):
        subprocess.run(["true"], check=True)
    with pytest.raises(tiers.ProcessNotMarked, match=r"os.system: true \(a shell\)"):
        os.system("true (a shell)")
    with pytest.raises(tiers.ProcessNotMarked, match=r"subprocess.Popen: /bin/sh -c echo one shell string"):
        subprocess.run("echo one shell string", shell=True)


@pytest.mark.process
def test_a_test_marked_process_can_start_one():
    assert subprocess.run(["true"]).returncode == 0


def test_the_timeouts_are_300_s_and_raise_in_the_test(request):
    assert (request.config.getini("timeout"), request.config.getini("timeout_method")) == ("300", "signal")


def test_a_test_over_its_timeout_fails_alone_and_the_run_goes_on(tmp_path):
    """pytest-timeout's signal method, in a pytest run of its own (in this process): the hung test
    fails, the next one runs (its thread method would end the whole run at the first)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 1\ntimeout_method = signal\n")
    (tmp_path / "test_hang.py").write_text(
        "import time\n\ndef test_hangs():\n    time.sleep(60)\n\ndef test_next():\n    pass\n")

    class Outcomes:
        def __init__(self):
            self.calls = {}

        def pytest_runtest_logreport(self, report):
            if report.when == "call":
                self.calls[report.nodeid.split("::")[-1]] = (report.outcome, str(report.longrepr or ""))

    outcomes = Outcomes()
    started = time.monotonic()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "--import-mode=importlib", "-c", str(tmp_path / "pytest.ini"),
                        "--rootdir", str(tmp_path), str(tmp_path / "test_hang.py")], plugins=[outcomes])
    assert code == pytest.ExitCode.TESTS_FAILED and time.monotonic() - started < 30
    assert outcomes.calls["test_hangs"][0] == "failed" and "Timeout (>1.0s)" in outcomes.calls["test_hangs"][1]
    assert outcomes.calls["test_next"] == ("passed", "")
