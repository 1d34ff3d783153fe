"""Class-data sharing for RayDP's JVMs (ray_backfill/cds.py): record once, dump, map — with real JVMs.

A small real JVM stands in for a session's four: `SparkSubmit --version` on RayDP's class path loads
Spark, Scala and log4j classes from the same jars, and takes about a second.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from ray_backfill import cds
from ray_backfill.jars import manifest_jars


def _java(options: str, classpath: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["java", *options.split(), "-cp", classpath, *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def classpath() -> str:
    return cds.raydp_classpath(manifest_jars())


@pytest.mark.process
def test_the_first_session_records_then_every_later_one_maps_the_archive(tmp_path, classpath):
    plan = cds.plan_shared_cds("raydp", classpath, tmp_path)
    assert plan is not None and plan.recording is not None and not plan.archive.exists()
    # another session meanwhile neither records nor waits: it starts plain
    assert cds.plan_shared_cds("raydp", classpath, tmp_path) is None
    for _ in range(2):  # two JVMs of the session, one log file each
        run = _java(plan.java_options, classpath, "org.apache.spark.deploy.SparkSubmit", "--version")
        assert run.returncode == 0, run.stderr
    assert len(list(plan.recording.glob("*.log"))) == 2

    assert plan.finish() is True
    assert plan.archive.is_file()
    assert not plan.recording.exists() and not plan.archive.with_suffix(".creating").exists()
    assert plan.archive.with_suffix(".dump.log").is_file()  # the dump's output, off the console

    mapped = cds.plan_shared_cds("raydp", classpath, tmp_path)
    assert mapped is not None and mapped.recording is None
    assert mapped.java_options == f"-XX:SharedArchiveFile={plan.archive} -Xshare:auto"
    run = _java(f"{mapped.java_options} -Xlog:class+load=info", classpath,
                "org.apache.spark.deploy.SparkSubmit", "--version")
    assert run.returncode == 0, run.stderr
    assert "org.apache.spark.deploy.SparkSubmit source: shared objects file" in run.stdout
    assert "scala.collection.immutable.List source: shared objects file" in run.stdout
    # nothing about the archive on the console of a JVM that maps it
    assert "[warning]" not in run.stdout + run.stderr
    assert mapped.finish() is False

    # a JVM on another class path ignores the archive, silently, and runs as without it
    run = _java(f"{mapped.java_options} -Xlog:class+load=info", manifest_jars()[0], "-version")
    assert run.returncode == 0 and "OpenJDK" in run.stderr
    assert "source: shared objects file" not in run.stdout and "[warning]" not in run.stdout + run.stderr


def test_a_replaced_jar_means_a_new_archive(tmp_path):
    jar = tmp_path / "lib.jar"
    jar.write_bytes(b"x")
    first = cds.plan_shared_cds("raydp", str(jar), tmp_path / "cds")
    os.utime(jar, (time.time() + 60, time.time() + 60))
    second = cds.plan_shared_cds("raydp", str(jar), tmp_path / "cds")
    assert first.archive != second.archive


def test_recorded_classes_are_the_jdk_and_jar_classes_without_hidden_ones(tmp_path):
    (tmp_path / "1.log").write_text(
        "[0.01s][info][class,load] java.lang.Object source: shared objects file\n"
        "[0.02s][info][class,load] sun.nio.cs.UTF_8$Encoder source: jrt:/java.base\n"
        "[0.03s][info][class,load] scala.util.Success source: file:/x/jars/scala-library-2.12.18.jar\n"
        "[0.04s][info][class,load] java.lang.invoke.LambdaForm$MH/0x00007f source: __JVM_LookupDefineClass__\n"
        "[0.05s][info][class,load] a.B$$Lambda$14/0x0000 source: a.B\n"
        "[0.06s][info][class,load] opened: /x/jars/scala-library-2.12.18.jar\n"
    )
    (tmp_path / "2.log").write_text("[0.01s][info][class,load] scala.util.Success source: file:/x/s.jar\n")
    assert cds.recorded_classes(tmp_path) == ["java/lang/Object", "scala/util/Success", "sun/nio/cs/UTF_8$Encoder"]


def test_a_claim_left_by_a_killed_recorder_is_taken_over_when_stale(tmp_path):
    jar = tmp_path / "lib.jar"
    jar.write_bytes(b"x")
    plan = cds.plan_shared_cds("raydp", str(jar), tmp_path / "cds")
    assert cds.plan_shared_cds("raydp", str(jar), tmp_path / "cds") is None
    old = time.time() - cds.CLAIM_STALE_S - 5
    os.utime(plan.archive.with_suffix(".creating"), (old, old))
    os.utime(plan.recording, (old, old))
    again = cds.plan_shared_cds("raydp", str(jar), tmp_path / "cds")
    assert again is not None and again.recording is not None
    assert not plan.recording.exists()  # the dead recorder's logs are cleared away


def test_no_archive_where_a_jvm_option_cannot_name_the_folder(tmp_path):
    assert cds.plan_shared_cds("raydp", "x.jar", tmp_path / "has space") is None
    assert cds.plan_shared_cds("raydp", "x.jar", tmp_path / "has:colon") is None


@pytest.mark.process
def test_the_local_driver_archive_writes_its_dump_warnings_to_a_file(tmp_path, classpath):
    plan = cds.plan_driver_cds("local", manifest_jars(), "", tmp_path)
    run = _java(plan.java_options, classpath, "org.apache.spark.deploy.SparkSubmit", "--version")
    assert run.returncode == 0, run.stderr
    assert "[warning]" not in run.stdout + run.stderr
    assert plan.finish() and plan.archive.is_file()
