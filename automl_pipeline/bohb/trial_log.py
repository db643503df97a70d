"""The phase's result logger: hpbandster's configs.json / results.json plus our TrialRecords,
the trajectory, and incumbent.json rewritten atomically after every finished trial."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from hpbandster.core.result import json_result_logger

from automl_pipeline.bohb.results import INCUMBENT_RULE, TrialRecord, select_incumbent
from submission import to_jsonable
from automl_pipeline.bohb.worker import n_epochs
from submission import write_json

_LOG = logging.getLogger("automl_pipeline.bohb")


class TrialLog(json_result_logger):
    """hpbandster's json_result_logger (configs.json, results.json) plus our trial
    records, the trajectory and incumbent.json after every finished trial.

    Called by the master inside its job callback: it must never raise (an
    exception there would leave the trial unregistered), so errors are logged.
    """

    def __init__(self, directory: Path, *, t0: float, log: Callable[[str], None]):
        super().__init__(directory=str(directory), overwrite=True)
        self.directory = Path(directory)
        self.t0 = t0
        self.log = log
        self.lock = threading.Lock()
        self.config_info: dict[tuple, dict] = {}
        self.trials: list[TrialRecord] = []
        self.trajectory: list[tuple[float, float]] = []
        self.incumbent: TrialRecord | None = None

    def new_config(self, config_id, config, config_info):
        config, config_info = to_jsonable(config), to_jsonable(config_info)
        with self.lock:
            self.config_info[tuple(config_id)] = config_info
        try:
            super().new_config(config_id, config, config_info)
        except Exception:   # noqa: BLE001 - logging must not kill the search
            _LOG.exception("could not log config %s", config_id)

    def __call__(self, job) -> None:
        try:
            super().__call__(job)
        except Exception:   # noqa: BLE001
            _LOG.exception("could not log result of %s", job.id)
        try:
            self._record(job)
        except Exception:   # noqa: BLE001
            _LOG.exception("could not record trial %s", job.id)

    def _record(self, job) -> None:
        config_id = tuple(job.id)
        with self.lock:
            rec = TrialRecord.from_hpbandster(
                config_id, job.kwargs["config"], job.kwargs["budget"], job.result, job.exception,
                config_info=self.config_info.get(config_id), worker=job.worker_name, t_s=time.monotonic() - self.t0)
            self.trials.append(rec)
            if rec.evaluated and (not self.trajectory or rec.val_macro_f1 > self.trajectory[-1][1]):
                self.trajectory.append((rec.t_s, rec.val_macro_f1))
            self.incumbent = select_incumbent(self.trials)
            incumbent = self.incumbent
        status = f"error {rec.error}" if rec.error else f"val macro-F1 {rec.val_macro_f1:.4f}"
        self.log(f"bohb: trial {list(config_id)} budget {rec.budget:g} ({rec.epochs_done} epochs, "
                 f"{rec.seconds:.1f}s{', cut by deadline' if rec.stopped_by_deadline else ''}): {status}")
        if incumbent is not None:
            write_json(self.directory / "incumbent.json", {
                "config": incumbent.config, "val_macro_f1": incumbent.val_macro_f1, "budget": incumbent.budget,
                "epochs": n_epochs(incumbent.budget), "config_id": list(incumbent.config_id),
                "t_s": round(incumbent.t_s, 3), "n_trials": len(self.trials), "rule": INCUMBENT_RULE})

    def model_based_picks(self) -> tuple[int, int]:
        with self.lock:
            infos = list(self.config_info.values())
        return sum(1 for i in infos if i.get("model_based_pick")), len(infos)
