"""The EPA AQI rules: hand-checked values of the Python reference, and the Spark columns against it."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from jobs import aqi
from jobs.aqi import (
    TABLES,
    aqi_category,
    dominant_pollutant,
    o3_index,
    overall_aqi,
    round_half_up,
    so2_index,
    sub_index,
    to_aqi_unit,
    truncate,
)

# (table, concentration in the table's unit, expected index). Edges are the 2024 breakpoints;
# interpolated values are worked out in the comment.
EDGES = [
    ("pm25", 0.0, 0),
    ("pm25", 9.0, 50),
    ("pm25", 9.05, 50),  # truncates to 9.0
    ("pm25", 9.1, 51),
    ("pm25", 12.0, 56),  # 49/26.3 × 2.9 + 51 = 56.40
    ("pm25", 35.4, 100),
    ("pm25", 35.45, 100),  # truncates to 35.4, not 35.5
    ("pm25", 35.5, 101),
    ("pm25", 55.4, 150),
    ("pm25", 55.5, 151),
    ("pm25", 125.4, 200),
    ("pm25", 125.5, 201),
    ("pm25", 225.4, 300),
    ("pm25", 225.5, 301),
    ("pm25", 325.4, 500),
    ("pm25", 325.5, 500),  # above the top breakpoint
    ("pm25", 1000.0, 500),
    ("pm10", 54.0, 50),
    ("pm10", 54.9, 50),
    ("pm10", 55.0, 51),
    ("pm10", 154.0, 100),
    ("pm10", 155.0, 101),
    ("pm10", 254.0, 150),
    ("pm10", 255.0, 151),
    ("pm10", 354.0, 200),
    ("pm10", 355.0, 201),
    ("pm10", 424.0, 300),
    ("pm10", 425.0, 301),
    ("pm10", 604.0, 500),
    ("pm10", 604.9, 500),
    ("pm10", 605.0, 500),
    ("pm10", 5000.0, 500),
    ("o3_8h", 0.054, 50),
    ("o3_8h", 0.055, 51),
    ("o3_8h", 0.070, 100),
    ("o3_8h", 0.0700000001, 100),  # truncates to 0.070
    ("o3_8h", 0.0709, 100),
    ("o3_8h", 0.071, 101),
    ("o3_8h", 0.085, 150),
    ("o3_8h", 0.086, 151),
    ("o3_8h", 0.105, 200),
    ("o3_8h", 0.106, 201),
    ("o3_8h", 0.153, 251),  # 99/0.094 × 0.047 + 201 = 250.5 exactly: half up
    ("o3_8h", 0.200, 300),
    ("o3_1h", 0.124, None),  # the 1-h table starts at 0.125
    ("o3_1h", 0.125, 101),
    ("o3_1h", 0.164, 150),
    ("o3_1h", 0.165, 151),
    ("o3_1h", 0.204, 200),
    ("o3_1h", 0.205, 201),
    ("o3_1h", 0.404, 300),
    ("o3_1h", 0.405, 301),
    ("o3_1h", 0.604, 500),
    ("o3_1h", 0.605, 500),
    ("co", 4.4, 50),
    ("co", 4.49, 50),
    ("co", 4.5, 51),
    ("co", 8.7, 93),  # 49/4.9 × 4.2 + 51 = 93 exactly
    ("co", 9.4, 100),
    ("co", 9.5, 101),
    ("co", 12.4, 150),
    ("co", 12.5, 151),
    ("co", 15.4, 200),
    ("co", 15.5, 201),
    ("co", 30.4, 300),
    ("co", 30.5, 301),
    ("co", 50.4, 500),
    ("co", 50.5, 500),
    ("no2", 53.0, 50),
    ("no2", 53.9, 50),
    ("no2", 54.0, 51),
    ("no2", 100.0, 100),
    ("no2", 101.0, 101),
    ("no2", 360.0, 150),
    ("no2", 361.0, 151),
    ("no2", 649.0, 200),
    ("no2", 650.0, 201),
    ("no2", 1249.0, 300),
    ("no2", 1250.0, 301),
    ("no2", 2049.0, 500),
    ("no2", 2050.0, 500),
    ("so2_1h", 35.0, 50),
    ("so2_1h", 36.0, 51),
    ("so2_1h", 38.0, 54),  # 49/39 × 2 + 51 = 53.51
    ("so2_1h", 75.0, 100),
    ("so2_1h", 76.0, 101),
    ("so2_1h", 185.0, 150),
    ("so2_1h", 186.0, 151),
    ("so2_1h", 304.0, 200),
    ("so2_24h", 304.0, None),  # the 24-h table starts at 305
    ("so2_24h", 305.0, 201),
    ("so2_24h", 604.0, 300),
    ("so2_24h", 605.0, 301),
    ("so2_24h", 1004.0, 500),
    ("so2_24h", 1005.0, 500),
]
# Values without an index in every table, and the overflow case.
SPECIAL = [None, math.nan, -0.1, -5.0, -math.inf, math.inf, 1e30]


@pytest.mark.parametrize(("table", "value", "expected"), EDGES)
def test_sub_index_edges(table, value, expected):
    assert sub_index(table, value) == expected


@pytest.mark.parametrize(
    ("table", "value", "expected"),
    [
        ("pm25", 35.45, Decimal("35.4")),
        ("pm25", 9.0999999999, Decimal("9.1")),  # float noise below a step counts as on it
        ("pm10", 54.999, Decimal("54")),
        ("o3_8h", 0.0700000001, Decimal("0.070")),
        ("o3_8h", 0.07, Decimal("0.070")),  # 0.07 × 1000 is 70.00000000000001 in floats
        ("co", 4.49, Decimal("4.4")),
        ("no2", 53.99, Decimal("53")),
        ("pm25", -0.05, Decimal("-0.1")),
        ("pm25", None, None),
        ("pm25", math.nan, None),
    ],
)
def test_truncate(table, value, expected):
    assert truncate(table, value) == expected


@pytest.mark.parametrize("value", [None, math.nan, -0.1, -1.0, -math.inf])
def test_negative_or_missing_has_no_index(value):
    assert all(sub_index(table, value) is None for table in TABLES)


@pytest.mark.parametrize(
    ("x", "expected"), [("0.5", 1), ("2.5", 3), ("3.5", 4), ("250.5", 251), ("2.4999", 2), ("56.4", 56)]
)
def test_round_half_up(x, expected):
    assert round_half_up(Decimal(x)) == expected


def test_unit_conversion():
    # ppb = µg/m³ × 24.45 / MW; O3 and CO in ppm.
    assert to_aqi_unit("pm25", 12.5) == 12.5
    assert to_aqi_unit("o3", 120.0) == pytest.approx(0.061125)  # 120 × 24.45 / 48 = 61.125 ppb
    assert to_aqi_unit("co", 10000.0) == pytest.approx(8.72903)  # 10000 × 24.45 / 28.01 = 8729.03 ppb
    assert to_aqi_unit("no2", 100.0) == pytest.approx(53.1406)  # 100 × 24.45 / 46.01
    assert to_aqi_unit("so2", 100.0) == pytest.approx(38.1614)  # 100 × 24.45 / 64.07
    assert to_aqi_unit("no2", None) is None


@pytest.mark.parametrize(
    ("pollutant", "table", "ug_m3", "expected"),
    [
        ("o3", "o3_8h", 120.0, 71),  # 0.061125 → 0.061 ppm: 49/15 × 6 + 51 = 70.6
        ("co", "co", 10000.0, 93),  # 8.72903 → 8.7 ppm: 49/4.9 × 4.2 + 51 = 93
        ("co", "co", 5000.0, 49),  # 4.3645 → 4.3 ppm: 50/4.4 × 4.3 = 48.86
        ("no2", "no2", 100.0, 50),  # 53.14 → 53 ppb
        ("so2", "so2_1h", 100.0, 54),  # 38.16 → 38 ppb: 49/39 × 2 + 51 = 53.51
    ],
)
def test_index_from_micrograms(pollutant, table, ug_m3, expected):
    assert sub_index(table, to_aqi_unit(pollutant, ug_m3)) == expected


@pytest.mark.parametrize(
    ("o3_8h", "o3_1h", "expected"),
    [
        (0.061, 0.061, 71),  # 1-h below 0.125: 8-h alone
        (0.061, None, 71),
        (0.075, 0.178, 167),  # 8-h 49/14 × 4 + 101 = 115; 1-h 49/39 × 13 + 151 = 167.33: the larger
        (0.106, 0.125, 201),  # 8-h 201 beats 1-h 101
        (0.200, 0.124, 300),  # 8-h at its top
        (0.201, 0.229, 213),  # 8-h above 0.200: 1-h alone, 99/199 × 24 + 201 = 212.94
        (0.201, 0.100, None),  # 8-h above 0.200 and no 1-h index
        (None, 0.178, 167),  # no 8-h mean: 1-h alone
        (None, 0.100, None),
        (0.300, 0.650, 500),
    ],
)
def test_o3_rule(o3_8h, o3_1h, expected):
    assert o3_index(o3_8h, o3_1h) == expected


@pytest.mark.parametrize(
    ("so2_1h", "so2_24h", "expected"),
    [
        (304.0, None, 200),  # the 1-h table's top
        (304.9, 700.0, 200),  # truncates to 304: the 24-h mean is not used
        (100.0, 700.0, 112),  # 49/109 × 24 + 101 = 111.79
        (305.0, 305.0, 201),
        (305.0, 304.0, 200),  # 24-h mean below 305
        (305.0, None, 200),  # no 24-h mean: the 1-h value alone establishes 200
        (400.0, 604.0, 300),
        (400.0, 605.0, 301),
        (400.0, 1004.0, 500),
        (400.0, 1005.0, 500),
        (None, 700.0, None),
        (-1.0, 700.0, None),
    ],
)
def test_so2_rule(so2_1h, so2_24h, expected):
    assert so2_index(so2_1h, so2_24h) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "good"), (50, "good"), (51, "moderate"), (100, "moderate"), (101, "usg"), (150, "usg"),
     (151, "unhealthy"), (200, "unhealthy"), (201, "very_unhealthy"), (300, "very_unhealthy"),
     (301, "hazardous"), (500, "hazardous"), (None, None)],
)
def test_category(value, expected):
    assert aqi_category(value) == expected


@pytest.mark.parametrize(
    ("sub_indexes", "aqi_value", "dominant"),
    [
        ({"pm25": 80, "pm10": 40, "o3": 79}, 80, "pm25"),
        ({"pm25": 80, "o3": 80}, 80, "pm25"),  # tie: pm25 first
        ({"o3": 80, "pm10": 80}, 80, "pm10"),  # tie order, not mapping order
        ({"co": 60, "so2": 60, "no2": 59}, 60, "so2"),
        ({"pm25": None, "no2": 120, "co": None}, 120, "no2"),
        ({"pm25": None, "o3": None}, None, None),
        ({}, None, None),
    ],
)
def test_overall_and_dominant(sub_indexes, aqi_value, dominant):
    assert overall_aqi(sub_indexes) == aqi_value
    assert dominant_pollutant(sub_indexes) == dominant


# --- the Spark columns give the reference's values ---------------------------------------


def _probe_values() -> list[float | None]:
    """Every edge above, each breakpoint ± half and ± one step, and a grid over each table."""
    values = {v for _, v, _ in EDGES} | {v for v in SPECIAL if v is not None and not math.isnan(v)}
    for table in TABLES.values():
        step = float(table.step)
        for lo, hi, _, _ in table.rows:
            for edge in (float(lo), float(hi)):
                values.update((edge, edge - step, edge + step, edge - step / 2, edge + step / 2, edge + step * 0.999))
        top = float(table.rows[-1][1])
        values.update(top * k / 40 for k in range(45))
    return sorted(values) + [None, math.nan]


@pytest.fixture(scope="module")
def spark_results(spark):
    """One Spark job: every table's sub-index, the O3 and SO2 rules and conversions over all probes."""
    from pyspark.sql import functions as F

    values = _probe_values()
    # O3 and SO2 pair each probe with a second value from the same list, shifted.
    rows = [(v, values[(i * 7) % len(values)]) for i, v in enumerate(values)]
    df = spark.createDataFrame(rows, "v DOUBLE, w DOUBLE")
    columns = [aqi.sub_index_col(name, F.col("v")).alias(name) for name in TABLES]
    columns += [
        aqi.o3_index_col(F.col("v"), F.col("w")).alias("o3"),
        aqi.o3_index_col(F.col("v") / 10, F.col("w") / 5).alias("o3_scaled"),
        aqi.so2_index_col(F.col("v"), F.col("w")).alias("so2"),
        aqi.so2_index_col(F.col("v") * 2, F.col("w") * 2).alias("so2_scaled"),
    ]
    columns += [
        aqi.sub_index_col(table, aqi.to_aqi_unit_col(pollutant, F.col("v") * 100)).alias(f"ug_{pollutant}")
        for pollutant, table in (("o3", "o3_8h"), ("no2", "no2"), ("so2", "so2_1h"), ("co", "co"))
    ]
    return values, df.select("v", "w", *columns).collect()


def _reference_row(v, w):
    """What the pure-Python reference gives for the probe (v, w), column by column."""
    def div(x, k):  # the same float operations as the Spark columns
        return None if x is None else x / k

    def mul(x, k):
        return None if x is None else x * k

    expected = {name: sub_index(name, v) for name in TABLES}
    expected["o3"] = o3_index(v, w)
    expected["o3_scaled"] = o3_index(div(v, 10), div(w, 5))
    expected["so2"] = so2_index(v, w)
    expected["so2_scaled"] = so2_index(mul(v, 2), mul(w, 2))
    for pollutant, table in (("o3", "o3_8h"), ("no2", "no2"), ("so2", "so2_1h"), ("co", "co")):
        expected[f"ug_{pollutant}"] = sub_index(table, to_aqi_unit(pollutant, mul(v, 100)))
    return expected


@pytest.mark.spark
@pytest.mark.parametrize(
    "column", [*TABLES, "o3", "o3_scaled", "so2", "so2_scaled", "ug_o3", "ug_no2", "ug_so2", "ug_co"]
)
def test_spark_sub_indexes_match_reference(spark_results, column):
    values, rows = spark_results
    assert len(rows) == len(values) > 300
    mismatches = []
    for row in rows:
        expected = _reference_row(row.v, row.w)[column]
        if row[column] != expected:
            mismatches.append((row.v, row.w, row[column], expected))
    assert mismatches == []


@pytest.mark.spark
def test_spark_category_and_dominant_match_reference(spark):
    from pyspark.sql import functions as F

    combos = [(a, b, c) for a in (None, 0, 50, 51, 150, 151, 301) for b in (None, 50, 151) for c in (None, 51, 500)]
    df = spark.createDataFrame(combos, "pm25 INT, o3 INT, co INT")
    subs = {p: F.col(p) for p in ("pm25", "o3", "co")}
    rows = df.select(
        "pm25", "o3", "co",
        aqi.overall_aqi_col(subs).alias("aqi"),
        aqi.aqi_category_col(aqi.overall_aqi_col(subs)).alias("category"),
        aqi.dominant_pollutant_col(subs).alias("dominant"),
    ).collect()
    assert len(rows) == len(combos)
    for row in rows:
        reference = {"pm25": row.pm25, "o3": row.o3, "co": row.co}
        assert (row.aqi, row.category, row.dominant) == (
            overall_aqi(reference), aqi_category(overall_aqi(reference)), dominant_pollutant(reference)
        ), row
