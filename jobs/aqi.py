"""US EPA AQI (EPA-454/B-24-002, 2024 breakpoints) as a pure-Python reference and as Spark columns.

Both forms are built from the one set of breakpoint tables below and give the same ints (a test
checks this). The rules are those of docs/tables.md#aqi:
- Concentrations are truncated to the table's step (PM2.5 0.1 µg/m³, PM10 1 µg/m³, O3 0.001 ppm,
  CO 0.1 ppm, NO2 and SO2 1 ppb) before lookup; a value within EPS steps below a step counts as
  on it, so decimal breakpoints survive float noise (35.45 → 35.4, 0.0700000001 → 0.070).
- I = (I_hi − I_lo) / (BP_hi − BP_lo) × (C − BP_lo) + I_lo, rounded half up.
- Above a table's top breakpoint the index is 500. A negative (truncated) value, NaN or NULL has
  no index (NULL). Each table's rows are contiguous on its truncation grid (checked at import),
  so a truncated value can never fall between two rows; the only other value without an index is
  one below a table's first row (O3 1-h below 0.125 ppm, SO2 24-h below 305 ppb).
- O3: the 8-h index while the 8-h mean is ≤ 0.200 ppm; the 1-h index where the 1-h value is
  ≥ 0.125 ppm; the larger of those present. Above 0.200 ppm 8-h the 1-h index alone, so NULL
  when the 1-h value is below 0.125 ppm or missing.
- SO2: the 1-h table up to 304 ppb; at ≥ 305 ppb the 24-h table, and 200 when the 24-h mean is
  below 305 ppb or missing (the 1-h value alone already establishes 200).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Mapping

from pyspark.sql import Column
from pyspark.sql import functions as F

from jobs.tables import AQI_POLLUTANTS, CATEGORIES

# Index range of each AQI category row: good, moderate, usg, unhealthy, very_unhealthy, hazardous.
INDEX_ROWS = ((0, 50), (51, 100), (101, 150), (151, 200), (201, 300), (301, 500))
# Molar volume (L/mol) at 25 °C and 1 atm, and molecular weights (g/mol): ppb = µg/m³ × 24.45 / MW.
MOLAR_VOLUME = 24.45
MOLECULAR_WEIGHTS = {"o3": 48.00, "no2": 46.01, "so2": 64.07, "co": 28.01}
_PPM = ("o3", "co")
# Truncation snaps values this many steps below a step up onto it: far above float noise at our
# magnitudes (~1e-11 steps), far below any real difference between two readings.
EPS = 1e-9


@dataclass(frozen=True)
class Table:
    """One breakpoint table: its unit, truncation step and rows (c_lo, c_hi, i_lo, i_hi)."""

    unit: str
    step: Decimal
    rows: tuple[tuple[Decimal, Decimal, int, int], ...]

    @property
    def scale(self) -> float:
        """Steps per unit: value × scale, floored, is the truncated value in steps."""
        return float(1 / self.step)

    @property
    def step_rows(self) -> tuple[tuple[int, int, int, int], ...]:
        """The rows with concentrations counted in steps (integers)."""
        return tuple((int(lo / self.step), int(hi / self.step), i_lo, i_hi) for lo, hi, i_lo, i_hi in self.rows)

    @property
    def top(self) -> int:
        """The top breakpoint in steps; anything above it is 500."""
        return self.step_rows[-1][1]


def _table(unit: str, step: str, *ranges: tuple[str, str] | None) -> Table:
    """A table from one concentration range per category (None where the table has no row)."""
    rows = tuple(
        (Decimal(r[0]), Decimal(r[1]), i_lo, i_hi) for r, (i_lo, i_hi) in zip(ranges, INDEX_ROWS, strict=True) if r
    )
    table = Table(unit, Decimal(step), rows)
    for (lo, hi, _, _), (c_lo, c_hi, _, _) in zip(table.step_rows, rows):
        if Decimal(lo) * table.step != c_lo or Decimal(hi) * table.step != c_hi or lo >= hi:
            raise ValueError(f"breakpoints {c_lo}–{c_hi} are not on the {step} {unit} grid")
    for (_, hi, _, _), (lo, _, _, _) in zip(table.step_rows, table.step_rows[1:]):
        if lo != hi + 1:
            raise ValueError(f"gap or overlap between breakpoint rows at {hi * table.step} {unit}")
    return table


TABLES = {
    "pm25": _table("µg/m³", "0.1", ("0.0", "9.0"), ("9.1", "35.4"), ("35.5", "55.4"), ("55.5", "125.4"),
                   ("125.5", "225.4"), ("225.5", "325.4")),
    "pm10": _table("µg/m³", "1", ("0", "54"), ("55", "154"), ("155", "254"), ("255", "354"), ("355", "424"),
                   ("425", "604")),
    "o3_8h": _table("ppm", "0.001", ("0.000", "0.054"), ("0.055", "0.070"), ("0.071", "0.085"), ("0.086", "0.105"),
                    ("0.106", "0.200"), None),
    "o3_1h": _table("ppm", "0.001", None, None, ("0.125", "0.164"), ("0.165", "0.204"), ("0.205", "0.404"),
                    ("0.405", "0.604")),
    "co": _table("ppm", "0.1", ("0.0", "4.4"), ("4.5", "9.4"), ("9.5", "12.4"), ("12.5", "15.4"), ("15.5", "30.4"),
                 ("30.5", "50.4")),
    "no2": _table("ppb", "1", ("0", "53"), ("54", "100"), ("101", "360"), ("361", "649"), ("650", "1249"),
                  ("1250", "2049")),
    "so2_1h": _table("ppb", "1", ("0", "35"), ("36", "75"), ("76", "185"), ("186", "304"), None, None),
    "so2_24h": _table("ppb", "1", None, None, None, None, ("305", "604"), ("605", "1004")),
}
# Upper AQI of each category; the last is open-ended.
_CATEGORY_TOPS = tuple(zip((50, 100, 150, 200, 300, None), CATEGORIES, strict=True))
_SO2_24H_FLOOR = 200


# --- pure-Python reference ---------------------------------------------------------------


def to_aqi_unit(pollutant: str, ug_m3: float | None) -> float | None:
    """A concentration in µg/m³ in its table's unit: µg/m³ for PM, ppm for O3 and CO, ppb for NO2, SO2."""
    if ug_m3 is None or pollutant not in MOLECULAR_WEIGHTS:
        return ug_m3
    ppb = ug_m3 * MOLAR_VOLUME / MOLECULAR_WEIGHTS[pollutant]
    return ppb / 1000 if pollutant in _PPM else ppb


def _steps(table: Table, value: float | None) -> int | float | None:
    """The value truncated, counted in steps; +inf stays +inf, NULL/NaN/−inf give None."""
    if value is None or math.isnan(value) or value == -math.inf:
        return None
    if value == math.inf:
        return math.inf
    # The same float operations as _steps_col, so both forms truncate identically.
    return math.floor(float(value) * table.scale + EPS)


def truncate(table_name: str, value: float | None) -> Decimal | None:
    """The value truncated to the table's step, e.g. truncate("pm25", 35.45) == Decimal("35.4")."""
    table = TABLES[table_name]
    steps = _steps(table, value)
    return None if steps is None else Decimal(steps) * table.step


def round_half_up(x: Decimal) -> int:
    """x rounded to an integer, halves away from zero (not Python's round-half-even)."""
    return int(x.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def sub_index(table_name: str, concentration: float | None) -> int | None:
    """The AQI of one concentration in the table's unit; 500 above the top, None without a row."""
    table = TABLES[table_name]
    c = truncate(table_name, concentration)
    if c is None:
        return None
    for c_lo, c_hi, i_lo, i_hi in table.rows:
        if c_lo <= c <= c_hi:
            # Multiplying before dividing keeps exact halves (e.g. 250.5) exact in Decimal.
            return round_half_up((i_hi - i_lo) * (c - c_lo) / (c_hi - c_lo) + i_lo)
    return 500 if c > table.rows[-1][1] else None


def o3_index(o3_8h_ppm: float | None, o3_1h_ppm: float | None) -> int | None:
    """The O3 sub-index from the 8-h mean and the 1-h value (ppm)."""
    c_8h = truncate("o3_8h", o3_8h_ppm)
    i_8h = sub_index("o3_8h", o3_8h_ppm) if c_8h is not None and c_8h <= TABLES["o3_8h"].rows[-1][1] else None
    present = [i for i in (i_8h, sub_index("o3_1h", o3_1h_ppm)) if i is not None]
    return max(present) if present else None


def so2_index(so2_1h_ppb: float | None, so2_24h_ppb: float | None) -> int | None:
    """The SO2 sub-index from the 1-h value and the 24-h mean (ppb)."""
    c_1h = truncate("so2_1h", so2_1h_ppb)
    if c_1h is None:
        return None
    if c_1h <= TABLES["so2_1h"].rows[-1][1]:
        return sub_index("so2_1h", so2_1h_ppb)
    i_24h = sub_index("so2_24h", so2_24h_ppb)
    return _SO2_24H_FLOOR if i_24h is None else i_24h


def overall_aqi(sub_indexes: Mapping[str, int | None]) -> int | None:
    """The largest non-null sub-index; None when there is none."""
    present = [i for i in sub_indexes.values() if i is not None]
    return max(present) if present else None


def aqi_category(aqi: int | None) -> str | None:
    """good 0–50, moderate 51–100, usg 101–150, unhealthy 151–200, very_unhealthy 201–300, hazardous."""
    if aqi is None:
        return None
    return next(name for top, name in _CATEGORY_TOPS if top is None or aqi <= top)


def dominant_pollutant(sub_indexes: Mapping[str, int | None]) -> str | None:
    """The pollutant whose sub-index is the AQI; ties go to the first of pm25, pm10, o3, no2, so2, co."""
    aqi = overall_aqi(sub_indexes)
    if aqi is None:
        return None
    return next(p for p in AQI_POLLUTANTS if sub_indexes.get(p) == aqi)


# --- Spark columns (native expressions, same tables) ---------------------------------------


def to_aqi_unit_col(pollutant: str, ug_m3: Column) -> Column:
    """to_aqi_unit as a column."""
    if pollutant not in MOLECULAR_WEIGHTS:
        return ug_m3
    ppb = ug_m3.cast("double") * F.lit(MOLAR_VOLUME) / F.lit(MOLECULAR_WEIGHTS[pollutant])
    return ppb / F.lit(1000.0) if pollutant in _PPM else ppb


def _steps_col(table: Table, value: Column) -> Column:
    """_steps as a bigint column; NaN becomes NULL (Spark would floor it to 0)."""
    value = value.cast("double")
    return F.when(~F.isnan(value), F.floor(value * F.lit(table.scale) + F.lit(EPS)))


def _index_from_steps(table: Table, steps: Column) -> Column:
    """A CASE over the table's rows; integer arithmetic, so halves round up exactly."""
    expr = None
    for lo, hi, i_lo, i_hi in table.step_rows:
        # round_half_up(a·k/q) = floor((2a·k + q) / 2q): operands are small integers, so the
        # double division is exact enough that floor never lands on the wrong side.
        q = hi - lo
        index = F.floor(((steps - F.lit(lo)) * F.lit(2 * (i_hi - i_lo)) + F.lit(q)) / F.lit(2 * q)) + F.lit(i_lo)
        condition = steps.between(lo, hi)
        expr = F.when(condition, index) if expr is None else expr.when(condition, index)
    return expr.when(steps > table.top, F.lit(500)).cast("int")


def sub_index_col(table_name: str, concentration: Column) -> Column:
    """sub_index as an int column (concentration in the table's unit)."""
    table = TABLES[table_name]
    return _index_from_steps(table, _steps_col(table, concentration))


def o3_index_col(o3_8h_ppm: Column, o3_1h_ppm: Column) -> Column:
    """o3_index as an int column."""
    table = TABLES["o3_8h"]
    i_8h = F.when(_steps_col(table, o3_8h_ppm) <= table.top, sub_index_col("o3_8h", o3_8h_ppm))
    return F.greatest(i_8h, sub_index_col("o3_1h", o3_1h_ppm))  # greatest skips NULLs


def so2_index_col(so2_1h_ppb: Column, so2_24h_ppb: Column) -> Column:
    """so2_index as an int column."""
    table = TABLES["so2_1h"]
    steps = _steps_col(table, so2_1h_ppb)
    return (
        F.when(steps <= table.top, _index_from_steps(table, steps))
        .when(steps > table.top, F.coalesce(sub_index_col("so2_24h", so2_24h_ppb), F.lit(_SO2_24H_FLOOR)))
        .cast("int")
    )


def overall_aqi_col(sub_indexes: Mapping[str, Column]) -> Column:
    """overall_aqi as a column."""
    return F.greatest(*sub_indexes.values())


def aqi_category_col(aqi: Column) -> Column:
    """aqi_category as a column."""
    expr = None
    for top, name in _CATEGORY_TOPS:
        # The open-ended last row must still leave a NULL aqi NULL.
        condition = aqi <= top if top is not None else aqi.isNotNull()
        expr = F.when(condition, name) if expr is None else expr.when(condition, name)
    return expr


def dominant_pollutant_col(sub_indexes: Mapping[str, Column]) -> Column:
    """dominant_pollutant as a column."""
    aqi = overall_aqi_col(sub_indexes)
    expr = None
    for pollutant in (p for p in AQI_POLLUTANTS if p in sub_indexes):
        condition = sub_indexes[pollutant] == aqi
        expr = F.when(condition, pollutant) if expr is None else expr.when(condition, pollutant)
    return expr
