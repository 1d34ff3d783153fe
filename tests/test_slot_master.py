"""A slot's RayDP app master (ray_backfill/slot_master.py): when it is kept, restarted, and what a
chunk's driver gets. The master's real life in a run: tests/test_ray_executor.py."""

from __future__ import annotations

from ray_backfill.slot_master import SlotMaster, master_configs


class CountingMaster(SlotMaster):
    """The keep-or-restart rules, with the JVMs left out: a 'start' is a counter."""

    def __init__(self, limit_mb: float = 100.0, max_applications: int = 1000) -> None:
        super().__init__("rbf-test-slot-0", {}, None, rss_limit_mb=limit_mb, max_applications=max_applications)
        self.live, self.rss, self.stops = True, 50.0, 0

    def _start(self) -> None:
        self.starts += 1
        self.url, self._master, self.live = f"ray://RAY_APP_MASTER@127.0.0.1:{40000 + self.starts}", object(), True

    def alive(self) -> bool:
        return self._master is not None and self.live

    def rss_mb(self) -> float:
        return self.rss

    def stop(self) -> None:
        if self._master is not None:
            self.stops += 1
        self._master, self.url = None, None


def test_a_master_is_started_once_and_kept_while_it_lives_within_its_memory_bound():
    master = CountingMaster(limit_mb=100)
    url, why = master.ensure()
    assert why == "start" and url.endswith(":40001")
    for _ in range(5):
        assert master.ensure() == (url, "")
    assert master.starts == 1 and master.stops == 0


def test_a_master_over_its_bound_or_dead_is_replaced_by_a_fresh_one():
    master = CountingMaster(limit_mb=100)
    first, _ = master.ensure()
    master.rss = 120.0
    second, why = master.ensure()
    assert why == "its master held 120 MiB, over 100"
    assert second != first and master.stops == 1
    master.rss, master.live = 40.0, False
    third, why = master.ensure()
    assert why == "its master had died" and third not in (first, second)
    assert master.starts == 3 and master.stops == 2


def test_a_master_that_served_its_number_of_applications_is_replaced_and_the_count_starts_again():
    master = CountingMaster(max_applications=3)
    urls = [master.ensure() for _ in range(7)]
    assert [why for _, why in urls] == ["start", "", "", "its master served 3 applications", "", "",
                                        "its master served 3 applications"]
    assert len({url for url, _ in urls}) == 3 and master.starts == 3 and master.stops == 2
    # a restart for another reason starts the count again too
    master.live = False
    assert master.ensure()[1] == "its master had died"
    assert [master.ensure()[1] for _ in range(2)] == ["", ""] and master.ensure()[1].startswith("its master served")


def test_a_driver_never_gets_the_port_of_the_slots_last_driver():
    master = CountingMaster()
    ports = [master.driver_port() for _ in range(50)]
    assert all(a != b for a, b in zip(ports, ports[1:]))
    assert all(1024 <= p <= 65535 for p in ports)


def test_the_masters_settings_carry_its_executors_class_path_and_no_executor_cap_or_catalog_setting():
    configs = master_configs(["/jars/iceberg.jar", "/jars/sqlite.jar"], "-XX:-UsePerfData")
    assert configs["raydp.executor.extraClassPath"] == "/jars/iceberg.jar:/jars/sqlite.jar"
    assert configs["spark.ray.raydp_app_master.extraJavaOptions"] == "-XX:-UsePerfData"
    assert configs["spark.javaagent"].endswith(".jar")
    # each application asks for its own executors; the master would cap every one at this number
    assert "spark.executor.instances" not in configs
    assert not [k for k in configs if k.startswith("spark.sql.catalog")]
