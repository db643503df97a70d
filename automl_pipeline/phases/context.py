"""What every phase gets (`RunContext`) and the two things every phase does the same way:
record a failure (`phase_failed`) and describe a search that did not run (`search_section`)."""
from __future__ import annotations

from dataclasses import dataclass
from automl_pipeline.checkpoints import Checkpoints
from automl_pipeline.delivery import Candidate, Delivery
from automl_pipeline.errors import error_text
from automl_pipeline.phases.common import RunData
from automl_pipeline.runlog import RunLog
from automl_pipeline.search_options import SearchOptions
from automl_pipeline.settings import Settings
from budget import Budget


@dataclass(frozen=True)
class RunContext:
    """One run's shared state, built once by the pipeline.

    report: the report.json sections; a phase writes its own (`darts`, `bohb`, ...).
    delivery: the best model so far, on disk (offer new ones with `deliver`).
    resumed: the report's `resume` section when this run continues a killed one, else None.
    """

    settings: Settings
    budget: Budget
    data: RunData
    log: RunLog
    store: Checkpoints
    report: dict
    delivery: Delivery
    resumed: dict | None = None

    def search_skipped(self, name: str, why: str) -> None:
        """A search phase (`darts` / `bohb`) that did not run: event `<name>_skipped`, its report section,
        and its row in the report's `phases` says "skipped" with the reason (also when the phase had
        started and only then found it could not run: `Budget.mark_skipped`)."""
        self.budget.mark_skipped(name, why)
        self.log.event(f"{name}_skipped", why)
        self.report[name] = search_section("skipped", why)

    def deliver(self, candidate: Candidate) -> None:
        """Offer a candidate; when it becomes the delivered model, checkpoint it for --resume."""
        if self.delivery.offer(candidate):
            self.store.save_delivered(candidate)

    @property
    def baseline(self) -> bool:
        return self.settings.method == "baseline"

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def options(self) -> SearchOptions:
        return self.settings.options


def phase_failed(log: RunLog, name: str, err: Exception) -> str:
    """Record a phase that raised (event `phase_failed`); the run goes on with the best model so far.
    Returns the reason for the report: "failed (Type: first line)"."""
    text = error_text(err)
    log.event("phase_failed", f"{name}: {text}; the run goes on with what it has")
    return f"failed ({text})"


def search_section(status: str, reason: str) -> dict:
    """The report's `darts` / `bohb` section of a search that did not run (status "skipped" or "not_run")."""
    return {"status": status, "reason": reason, "arch_steps": 0, "cell_used": False, "n_trials": 0,
            "model_based_picks": 0}
