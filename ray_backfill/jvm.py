"""JVM options every Spark session's JVMs start with. Standard library only: a chunk process and
benchmarks/chunk_overhead.py import it before anything heavy."""

from __future__ import annotations

# Java 17 closes these packages; Spark and RayDP reach into them (RayDP's own test settings).
ADD_OPENS = " ".join(
    f"--add-opens=java.base/{pkg}=ALL-UNNAMED"
    for pkg in (
        "java.lang", "java.lang.invoke", "java.io", "java.net", "java.nio", "java.math",
        "java.text", "java.util", "java.util.concurrent", "java.util.concurrent.atomic",
        "sun.nio.ch", "sun.nio.cs", "sun.security.action", "sun.util.calendar",
    )
)

# Every JVM a session starts (driver, executors, RayDP's master): Java 17's package openings, and no
# hsperfdata file (/tmp/hsperfdata_<user>/<pid>, 32 KB): Ray ends executors with a kill, which
# leaves that file behind (docs/operations.md#disk); the JDK's own tools (jps, jstat) do without.
EVERY_JVM = f"{ADD_OPENS} -XX:-UsePerfData"

# For a JVM that lives for one short job (a bronze chunk): the C1 compiler alone and the serial
# collector start faster than the tiered JIT and G1 (benchmarks/chunk_overhead.py, chunk_cpu.py).
QUICK_START_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
