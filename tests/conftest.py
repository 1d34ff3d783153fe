"""Shared fixtures: one local Spark session per test session, Iceberg warehouses in tmp_path."""

from __future__ import annotations

import pytest

from ray_backfill.config import CatalogConfig, Settings, SparkConfig


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
