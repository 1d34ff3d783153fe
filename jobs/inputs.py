"""Pipeline inputs: the locations and pollutants files, read and validated line by line."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Location:
    """One city from locations.jsonl; `extra` keeps unknown fields for dim_location."""

    location_key: str
    location_name: str
    latitude: float
    longitude: float
    timezone: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Pollutant:
    """One pollutant from pollutants.jsonl."""

    pollutant_code: str
    display_name: str
    unit_default: str
    aqi_timespan: str | None
    who_guideline_24h: float | None = None
