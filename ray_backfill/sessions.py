"""The one place that builds Spark sessions: RayDP (default) or plain local[N], Iceberg wired in.

A session is a context manager: it is stopped on exit — success or failure — and its JVM is
gone afterwards (pyspark keeps the gateway JVM alive after `stop()`, so we end it ourselves).
RayDP sessions need a Ray connection; when none exists one is made and closed again here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from jobs.config import CatalogConfig, Settings, SparkConfig
from jobs.errors import ConfigError, StageError, WarehouseError
from ray_backfill.jars import manifest_jars
from ray_backfill.jvm import EVERY_JVM, QUICK_START_JVM
from ray_backfill.leftovers import drop_native_copy, remove_session_files

log = logging.getLogger(__name__)


def ensure_warehouse(catalog: CatalogConfig) -> None:
    """Create a local warehouse folder, or raise WarehouseError saying why it cannot be used."""
    if not catalog.warehouse_is_local:
        return
    path = catalog.warehouse_path
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise WarehouseError(f"warehouse {catalog.warehouse!r} is not usable: {exc.strerror or exc}") from None


def check_writers(catalog: CatalogConfig, writers: int) -> None:
    """Refuse a catalog that can lose commits with `writers` concurrent writing JVMs."""
    if catalog.kind == "hadoop" and catalog.warehouse_is_local and writers > 1:
        raise ConfigError(
            f"the Hadoop catalog on a local file system ({catalog.warehouse}) loses commits with "
            f"{writers} concurrent writers (its lock is per JVM and a local rename overwrites); "
            "use the sqlite or postgres JDBC catalog, or parallelism 1"
        )


def check_cluster_catalog(catalog: CatalogConfig, node_hosts: Iterable[str]) -> None:
    """Refuse a catalog or warehouse that only one host can see when the cluster spans several.

    `node_hosts` are the alive Ray nodes' addresses; nodes on one host may share its local paths.
    """
    hosts = sorted(set(node_hosts))
    if len(hosts) < 2:
        return
    unshared = []
    if catalog.kind == "sqlite":
        unshared.append("the sqlite catalog")
    if catalog.warehouse_is_local:
        unshared.append(f"the local warehouse path {catalog.warehouse}")
    if unshared:
        shown = ", ".join(hosts[:4]) + (", ..." if len(hosts) > 4 else "")
        verb = "are" if len(unshared) > 1 else "is"
        raise ConfigError(
            f"the Ray cluster spans {len(hosts)} hosts ({shown}) but {' and '.join(unshared)} {verb} on "
            "one host only: use the postgres JDBC catalog (--catalog postgres) or a REST catalog, "
            "and an hdfs:// or s3a:// --warehouse"
        )


def catalog_secrets(catalog: CatalogConfig) -> dict[str, str]:
    """The catalog's credentials as Spark settings (the JDBC password, the REST token).

    Never passed when a session starts: pyspark hands every setting to the JVM's command line
    (`spark-submit --conf k=v`), where `ps` shows it to every user. `spark_session` sets them on
    the running session instead, before anything opens the catalog (Spark loads a catalog's
    options from the session's settings when it is first used)."""
    if not catalog.password:
        return {}
    prefix = f"spark.sql.catalog.{catalog.name}"
    key = "jdbc.password" if catalog.kind in ("sqlite", "postgres") else "token" if catalog.kind == "rest" else None
    return {f"{prefix}.{key}": catalog.password} if key else {}


def catalog_conf(catalog: CatalogConfig, secrets: bool = True) -> dict[str, str]:
    """Spark settings that register the Iceberg catalog `catalog.name` (with its credentials
    unless `secrets` is False: see catalog_secrets)."""
    prefix = f"spark.sql.catalog.{catalog.name}"
    conf = {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.warehouse": catalog.warehouse_uri,
        # Other JVMs commit to the same tables: always read the current metadata.
        f"{prefix}.cache-enabled": "false",
    }
    if catalog.kind in ("sqlite", "postgres"):
        conf[f"{prefix}.catalog-impl"] = "org.apache.iceberg.jdbc.JdbcCatalog"
        conf[f"{prefix}.uri"] = catalog.jdbc_uri()
        conf[f"{prefix}.jdbc.schema-version"] = "V1"
        if catalog.user:
            conf[f"{prefix}.jdbc.user"] = catalog.user
    elif catalog.kind == "hadoop":
        conf[f"{prefix}.type"] = "hadoop"
    else:
        conf[f"{prefix}.type"] = "rest"
        conf[f"{prefix}.uri"] = str(catalog.uri)
    for key, value in catalog.properties:
        conf[f"{prefix}.{key}"] = value
    if secrets:
        conf.update(catalog_secrets(catalog))
    return conf


def spark_conf(settings: Settings, jars: list[str]) -> dict[str, str]:
    """Every Spark setting a session starts with, except the master (and the catalog's credentials)."""
    spark = settings.spark
    jvm = f"{EVERY_JVM} -Duser.timezone=UTC" + (f" {QUICK_START_JVM}" if spark.quick_start else "")
    conf = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        # On the JVMs' class path only: `spark.jars` would also make every executor fetch its own
        # copy of each jar into its application's work folder (~59 MB an application, never removed;
        # docs/operations.md#disk). RayDP's executors get them from raydp.executor.extraClassPath.
        "spark.driver.extraClassPath": ":".join(jars),
        "spark.driver.memory": spark.driver_memory,
        "spark.driver.extraJavaOptions": " ".join(filter(None, (jvm, spark.driver_java_options))),
        "spark.executor.extraJavaOptions": jvm,
        # Executors (Ray Java workers under RayDP) start Python workers with this interpreter,
        # the one that has pyspark; the default `python3` on PATH does not.
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.sql.shuffle.partitions": str(spark.shuffle_partitions),
        "spark.default.parallelism": str(spark.shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
    }
    conf.update(catalog_conf(settings.catalog, secrets=False))
    conf.update(dict(spark.extra))
    return conf


def _end_gateway_jvm() -> None:
    """End pyspark's gateway JVM, which outlives `SparkSession.stop()`."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    with contextlib.suppress(Exception):
        gateway.shutdown()
    if proc is not None:
        with contextlib.suppress(Exception):
            proc.stdin.close()
            proc.terminate()
        _reap(proc)
    SparkContext._gateway = None
    SparkContext._jvm = None


def _reap(proc) -> None:
    """Wait for a JVM told to end (SIGTERM, stdin closed) to exit; SIGKILL it after 15 s."""
    with contextlib.suppress(Exception):
        proc.wait(timeout=15)
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=5)


@contextlib.contextmanager
def _jvm_output_to(log_path: Path | None) -> Iterator[None]:
    """Point this process's stdout and stderr (fds 1 and 2) at `log_path` while a JVM starts: the
    JVM inherits them, so its output (Spark's console log, JVM warnings) goes to that file for its
    whole life; ours comes back when the block ends. Nothing changes without a path."""
    if log_path is None:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for each in (fd, *saved):
            os.close(each)


@contextlib.contextmanager
def spark_session(settings: Settings, app_name: str, log_path: Path | None = None,
                  facts_path: Path | None = None, master: dict | None = None) -> Iterator["SparkSession"]:  # noqa: F821
    """A fresh Spark session with the Iceberg catalog; stopped, JVM ended, its temporary files
    removed, on exit.

    With `log_path`, the session's JVM writes its output there instead of this process's console
    (the baseline's session lives in the driver, whose console shows progress only). With
    `facts_path`, what the session leaves on its node (its application id, its Ray jobs and JVMs) is
    written there as JSON once it is up, for the supervisor to clean after the process ends
    (ray_backfill/leftovers.py, ray_backfill/logs.py). With `master` (a RayDP session: the URL of
    the slot's app master, ray_backfill/slot_master.py, and this node's address, log folder and a
    driver port), the driver registers with that master instead of starting one of its own."""
    ensure_warehouse(settings.catalog)
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        # getOrCreate would hand back that session, ignore these settings, and end its JVM on exit
        raise StageError(f"{app_name}: a Spark session is already running in this process; "
                         "a fresh session needs a process of its own", stage=app_name.split("-")[0])
    # PySpark turns collected timestamps into naive datetimes in the process's local zone;
    # the lakehouse is UTC end to end, so the driver process is too.
    os.environ["TZ"] = "UTC"
    time.tzset()
    # pyspark hands executors os.environ["PYSPARK_PYTHON"] (default `python3`, without pyspark).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    jars = manifest_jars()
    conf = spark_conf(settings, jars)
    # The driver JVM's temporary files (Spark's local folder, native libraries it unpacks such as
    # lz4's) in a folder of this session's, removed when it ends; under TMPDIR, which a chunk's
    # supervisor points at the attempt's own folder, so a killed chunk's go with that folder.
    cds = _plan_cds(settings.spark, jars, conf) if settings.spark.class_data_sharing else None
    jvm_tmp = Path(tempfile.mkdtemp(prefix="rbf-jvm-"))  # after the archive's key, which must not vary
    conf["spark.driver.extraJavaOptions"] += f" -Djava.io.tmpdir={jvm_tmp}"
    started = time.monotonic()
    try:
        with _jvm_output_to(log_path):
            if settings.spark.mode == "local":
                if cds is not None:
                    conf["spark.driver.extraJavaOptions"] += f" {cds.java_options}"
                session = _local_session(settings.spark, app_name, conf)
                stop = session.stop
            else:
                every_jvm = cds.java_options if cds else ""
                if master is not None:
                    session, stop = _slot_master_session(settings.spark, app_name, conf, every_jvm, master)
                else:
                    session, stop = _raydp_session(settings.spark, app_name, conf, jars, every_jvm)
    except BaseException:
        shutil.rmtree(jvm_tmp, ignore_errors=True)
        raise
    session.sparkContext.setLogLevel("ERROR")
    if facts_path is not None:
        try:
            _write_facts(facts_path, session)
        except Exception as exc:  # what cleans up after the attempt is not worth failing it for
            log.warning("what session %s leaves on its node was not recorded: %s", app_name, exc)
    for key, value in catalog_secrets(settings.catalog).items():  # after start: never on a command line
        session.conf.set(key, value)
    log.info("spark session %s (%s) up in %.1fs", app_name, settings.spark.mode, time.monotonic() - started)
    try:
        yield session
    except Exception as exc:
        # A py4j error's own text is "An error occurred while calling o123.x": say what the JVM said
        # while the JVM is still there to ask.
        java = getattr(exc, "java_exception", None)
        if java is None:
            raise
        try:
            message = str(java.toString()).splitlines()[0]
        except Exception:
            raise exc from None
        raise StageError(f"{app_name}: {message}", stage=app_name.split("-")[0]) from exc
    finally:
        with contextlib.suppress(Exception):
            stop()
        _end_gateway_jvm()
        shutil.rmtree(jvm_tmp, ignore_errors=True)
        if cds is not None and cds.finish():
            log.info("class-data archive for %s sessions written: %s", settings.spark.mode, cds.archive)


def _plan_cds(spark: SparkConfig, jars: list[str], conf: dict[str, str]):
    """The class-data-sharing plan of a session's JVMs (ray_backfill/cds.py), or None."""
    from ray_backfill import cds

    if spark.mode == "local":
        return cds.plan_driver_cds(spark.mode, jars, conf["spark.driver.extraJavaOptions"])
    return cds.plan_shared_cds("raydp", cds.raydp_classpath(jars))


def _local_session(spark: SparkConfig, app_name: str, conf: dict[str, str]):
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(f"local[{spark.executor_cores}]").appName(app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _raydp_session(spark: SparkConfig, app_name: str, conf: dict[str, str], jars: list[str], every_jvm: str = ""):
    """A RayDP session; `every_jvm` is appended to the options of all its JVMs (driver, executors, master)."""
    import ray
    import raydp

    started_ray = False
    if not ray.is_initialized():
        # Each RayDP session needs its own namespace: the app master's actor name is fixed.
        ray.init(
            address=os.environ.get("RAY_ADDRESS") or None,
            namespace=f"rbf-{uuid.uuid4().hex[:12]}",
            include_dashboard=False,
            log_to_driver=False,
        )
        started_ray = True
    conf = _with_every_jvm(conf, every_jvm)
    # RayDP's gateway JVM and its app master (a Ray Java worker) run Spark's master only
    master = EVERY_JVM + (f" {QUICK_START_JVM}" if spark.quick_start else "")
    conf["spark.ray.raydp_app_master.extraJavaOptions"] = f"{master} {every_jvm}".strip()
    conf["raydp.executor.extraClassPath"] = ":".join(jars)
    # RayDP's Java agent writes to ray.logging.dir, else /tmp/ray/session_latest/logs: the newest
    # cluster on the machine, not necessarily ours (tests, several clusters on one host)
    logs_dir = ray._private.worker._global_node.get_logs_dir_path()
    conf["spark.driver.extraJavaOptions"] += f" -Dray.logging.dir={logs_dir}"
    # The app name goes into RayDP's and Spark's logs: unique per session, as attempts repeat a task id.
    unique_app = f"{app_name}-{uuid.uuid4().hex[:8]}"
    try:
        session = _init_raydp(
            app_name=unique_app,
            num_executors=spark.num_executors,
            executor_cores=spark.executor_cores,
            executor_memory=spark.executor_memory,
            configs=conf,
        )
    except BaseException:
        if started_ray:
            ray.shutdown()
        raise
    # the gateway has loaded Ray's native library: its private copy can go (ray_backfill/leftovers.py)
    gateway = _raydp_gateway()
    if gateway is not None:
        drop_native_copy(gateway.pid)

    def stop() -> None:
        try:
            raydp.stop_spark()
        finally:
            if started_ray:
                node = ray._private.worker._global_node
                ray.shutdown()
                if node.head:  # a local cluster this process started for this one session, now stopped
                    remove_session_files(node.get_session_dir_path())

    return session, stop


def _with_every_jvm(conf: dict[str, str], every_jvm: str) -> dict[str, str]:
    """A copy of `conf` whose driver and executor JVMs also start with `every_jvm`."""
    conf = dict(conf)
    for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"):
        conf[key] = f"{conf[key]} {every_jvm}".strip()
    return conf


def _slot_master_session(spark: SparkConfig, app_name: str, conf: dict[str, str], every_jvm: str, master: dict):
    """A RayDP session whose driver registers with the slot's running app master: no Ray
    connection, no master JVM of its own. Its executors are its own, started by that master."""
    from raydp.spark.ray_cluster import SparkCluster

    class SlotCluster(SparkCluster):
        def _set_up_master(self, resources, kwargs):
            self._spark_master_handle = None

        def get_cluster_url(self) -> str:
            return master["url"]

    conf = _with_every_jvm(conf, every_jvm)
    # RayDP's Java agent in the driver writes to ray.logging.dir: this node's Ray log folder
    conf["spark.driver.extraJavaOptions"] += f" -Dray.logging.dir={master['logs_dir']}"
    conf["spark.driver.host"] = conf["spark.driver.bindAddress"] = master["node_ip"]
    # never the port of the slot's last driver: the master ignores a second registration from one address
    conf["spark.driver.port"] = str(master["driver_port"])
    cluster = SlotCluster(f"{app_name}-{uuid.uuid4().hex[:8]}", spark.num_executors, spark.executor_cores,
                          spark.executor_memory, False, conf)
    session = cluster.get_spark_session()
    return session, session.stop


def _raydp_gateway():
    """The running RayDP session's gateway JVM (a child of this process), or None."""
    import raydp.context as context

    try:
        return context._global_spark_context._spark_cluster._master._gateway.proc
    except AttributeError:
        return None


def raydp_app_id(session) -> str | None:
    """The id RayDP's master gave the session's application, which names its executors' work folder
    (`<Ray session>/app-…`), or None. Spark's own `applicationId` is another one: RayDP's scheduler
    backend keeps the master's id to itself (a private field, read here through reflection)."""
    try:
        backend = session.sparkContext._jsc.sc().schedulerBackend()
        if not backend.getClass().getName().endswith(".RayCoarseGrainedSchedulerBackend"):
            return None  # a local session: no executors, no work folder
        for field in backend.getClass().getDeclaredFields():
            if field.getName().endswith("appId"):  # scalac may mangle the name of a private val
                field.setAccessible(True)
                app_id = field.get(backend).get()  # an AtomicReference[String]
                return str(app_id) if app_id else None
    except Exception:  # another RayDP than the one pinned: nothing to clean then
        return None
    return None


def _write_facts(path: Path, session) -> None:
    """Write what the session leaves on this node, for cleaning after its process ends: its
    application id (RayDP's, which names its executors' work folder), this process's JVMs and the
    Ray jobs it and its gateway joined as."""
    import psutil

    facts: dict = {"app_id": raydp_app_id(session) or session.sparkContext.applicationId,
                   "pids": [p.pid for p in psutil.Process().children(recursive=True)]}
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        node = ray._private.worker._global_node
        logs_dir = Path(node.get_logs_dir_path())
        jobs = [ray.get_runtime_context().get_job_id()]
        gateway = _raydp_gateway()
        if gateway is not None:  # its Ray log file is named after its job: java-core-driver-<job>ff…_<pid>.log
            jobs += [f.name[len("java-core-driver-"):][:8] for f in logs_dir.glob(f"java-core-driver-*_{gateway.pid}.log")]
        facts.update(session_dir=node.get_session_dir_path(), logs_dir=str(logs_dir), ray_jobs=jobs)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(facts))
    os.replace(tmp, path)


def _init_raydp(app_name: str, num_executors: int, executor_cores: int, executor_memory: str,
                configs: dict[str, str]):
    """`raydp.init_spark` with RayDP's master in this process instead of an actor of its own.

    RayDP's `RayDPSparkMaster` is a Python actor whose one job is to start the py4j gateway JVM
    that creates the `RayAppMaster` Java actor; an actor costs a Python worker process per session
    (docs/operations.md#session-start-up-cost). Here the same class runs in the chunk's process:
    the gateway JVM becomes this process's child (its stdin is a pipe from here, so it ends with
    this process however that ends), and `raydp.stop_spark()` stops it as before.
    `fault_tolerant_mode` stays off: it makes the driver JVM a Java Ray driver too, for Spark ->
    Ray dataset conversion, which nothing here uses.
    """
    import raydp.context as context
    from raydp.spark.ray_cluster import SparkCluster
    from raydp.spark.ray_cluster_master import RayDPSparkMaster

    class InProcessMasterCluster(SparkCluster):
        def _set_up_master(self, resources, kwargs):
            self._master = RayDPSparkMaster.__ray_metadata__.modified_class(self._configs)
            self._spark_master_handle = None
            self._master.start_up()

        def get_cluster_url(self) -> str:
            return self._master.get_master_url()

        def stop(self, cleanup_data):
            if self._spark_session is not None:
                self._spark_session.stop()
                self._spark_session = None
            master, self._master = getattr(self, "_master", None), None
            if master is None:
                return
            gateway = getattr(master._gateway, "proc", None)
            master.stop(cleanup_data=False)  # True would end the actor's process, here this one
            if gateway is not None:  # stop() only sent it SIGTERM
                _reap(gateway)

    class InProcessMasterContext(context._SparkContext):
        def _get_or_create_spark_cluster(self) -> SparkCluster:
            if self._spark_cluster is None:
                self._spark_cluster = InProcessMasterCluster(
                    self._app_name, self._num_executors, self._executor_cores, self._executor_memory,
                    self._enable_hive, self._configs)
            return self._spark_cluster

    with context._spark_context_lock:
        if context._global_spark_context is not None:
            raise StageError(f"{app_name}: a RayDP session is already running in this process",
                             stage=app_name.split("-")[0])
        spark_context = InProcessMasterContext(
            app_name, num_executors, executor_cores, executor_memory, enable_hive=False,
            fault_tolerant_mode=False, placement_group_strategy=None, placement_group=None,
            placement_group_bundle_indexes=None, configs=configs)
        context._global_spark_context = spark_context  # raydp.stop_spark() stops it
        try:
            return spark_context.get_or_create_session()
        except BaseException:
            with contextlib.suppress(Exception):
                spark_context.stop()
            context._global_spark_context = None
            raise
