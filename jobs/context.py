"""What every stage needs besides a session: the validated inputs of a run."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.config import PipelineConfig
from jobs.inputs import Location, Pollutant, load_locations, load_pollutants
from jobs.sources import variables_for


@dataclass(frozen=True)
class StageInputs:
    """Locations and pollutants of a run: the selected ones, and all (for the dimensions)."""

    locations: tuple[Location, ...]
    all_locations: tuple[Location, ...]
    pollutants: tuple[Pollutant, ...]
    all_pollutants: tuple[Pollutant, ...]
    variables: tuple[str, ...]

    @property
    def location_keys(self) -> list[str]:
        return [loc.location_key for loc in self.locations]


def load_inputs(pipeline: PipelineConfig) -> StageInputs:
    """Read and validate the inputs; raises InputError before anything starts or is written."""
    all_locations = load_locations(pipeline.locations_file)
    locations = load_locations(pipeline.locations_file, pipeline.locations) if pipeline.locations else all_locations
    all_pollutants = load_pollutants(pipeline.pollutants_file)
    pollutants = (
        load_pollutants(pipeline.pollutants_file, pipeline.pollutants) if pipeline.pollutants else all_pollutants
    )
    variables = variables_for([p.pollutant_code for p in pollutants] if pipeline.pollutants else None)
    return StageInputs(tuple(locations), tuple(all_locations), tuple(pollutants), tuple(all_pollutants), variables)
