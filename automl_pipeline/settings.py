"""The run's settings: one frozen, validated object, parsed once from the command line."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from automl_pipeline.search_options import SearchOptions
from budget.reserves import MIN_TIME_LIMIT_S

METHODS = ("ours", "baseline")
DEVICES = ("auto", "cpu", "cuda")




class SettingsError(ValueError):
    """A setting that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on. Written into report.json as `settings`.

    method: "ours" runs DARTS then BOHB over DARTS-informed cells with focal loss and class
    weights; "baseline" is the same pipeline with DARTS off: BOHB over a fixed CNN of template
    blocks with plain cross-entropy and no class weights.

    resume: continue the run whose checkpoints are in output_dir/checkpoints (its splits, finished
    DARTS epochs, finished BOHB trials and delivered model); refused (exit 2) when there are none
    or when the data, method, seed, image side or search options differ. The time limit is this run's own.
    """

    time_limit_s: float
    data_dir: Path | None = None
    output_dir: Path = Path("output")
    seed: int = 0
    device: str = "auto"
    quiet: bool = False
    method: str = "ours"
    workers: int = 1
    nameserver_host: str = "127.0.0.1"
    nameserver_port: int = 0
    max_image_side: int | None = None
    resume: bool = False             # continue the killed run in output_dir (see automl_pipeline/checkpoints.py)
    search: SearchOptions = SearchOptions()   # which parts of the method run (--search-config)

    def __post_init__(self) -> None:
        if not (self.time_limit_s > 0 and math.isfinite(self.time_limit_s)):
            raise SettingsError(f"--time-limit must be a positive number of seconds, got {self.time_limit_s}")
        if self.time_limit_s < MIN_TIME_LIMIT_S:
            raise SettingsError(f"--time-limit {self.time_limit_s:g} is too short: at least {MIN_TIME_LIMIT_S:g} s "
                                "are needed to start torch, load the data and write predictions")
        if self.device not in DEVICES:
            raise SettingsError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.method not in METHODS:
            raise SettingsError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.seed < 0:
            raise SettingsError(f"--seed must be >= 0, got {self.seed}")
        if self.workers < 1:
            raise SettingsError(f"--workers must be >= 1, got {self.workers}")
        if not (0 <= self.nameserver_port <= 65535):
            raise SettingsError(f"--nameserver-port must be in 0..65535, got {self.nameserver_port}")
        if self.max_image_side is not None and self.max_image_side < 4:
            raise SettingsError(f"--max-image-side must be >= 4, got {self.max_image_side}")

    @property
    def options(self) -> SearchOptions:
        """The search options this run uses (the baseline's parts turned off: SearchOptions.for_method)."""
        return self.search.for_method(self.method)

    def to_json(self) -> dict:
        """Plain-JSON view for report.json."""
        out = dataclasses.asdict(self)
        out["data_dir"] = None if self.data_dir is None else str(self.data_dir)
        out["output_dir"] = str(self.output_dir)
        return out
