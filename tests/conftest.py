"""Shared fixtures: one local Spark session per test session, Iceberg warehouses in tmp_path. And the
test tiers' hooks: the markers of what a test starts, its timeout, no process unless marked
(tests/tiers.py)."""

from __future__ import annotations

import pytest

from jobs.config import CatalogConfig, Settings, SparkConfig
from tests import tiers


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker (_pytest.mark's own hook)
def pytest_collection_modifyitems(config, items):
    tiers.mark_by_what_they_start(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from tiers.watch(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from tiers.watch(item))


@pytest.fixture(scope="session")
def spark_warehouse(tmp_path_factory):
    return tmp_path_factory.mktemp("warehouse")


@pytest.fixture(scope="session")
def spark_settings(spark_warehouse) -> Settings:
    """Settings of the shared local session: SQLite catalog in a temporary warehouse."""
    return Settings(
        catalog=CatalogConfig(warehouse=str(spark_warehouse)),
        spark=SparkConfig(mode="local", executor_cores=2),
    )


@pytest.fixture(scope="session")
def spark(spark_settings):
    """A real local Spark session with the Iceberg catalog `lh`, shared by the transform tests."""
    from ray_backfill.sessions import spark_session

    with spark_session(spark_settings, "tests") as session:
        yield session


@pytest.fixture
def fresh_settings(spark, spark_settings, tmp_path) -> Settings:
    """Settings for a new, empty catalog in tmp_path, registered on the shared session."""
    from tests.helpers import fresh_catalog

    return fresh_catalog(spark, spark_settings, tmp_path)


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server on 127.0.0.1 (tests/postgres.py); stopped, and checked gone, at the end."""
    from tests.postgres import start_postgres, stop_postgres

    server = start_postgres()
    try:
        yield server
    finally:
        left = stop_postgres(server)
        assert not left, f"PostgreSQL processes of {server.data} survived pg_ctl stop: {sorted(left)}"
