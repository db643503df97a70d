"""The run: data -> splits -> first model -> DARTS -> BOHB -> final fit -> report, under one budget.

`run(settings)` is the one entry point (run.py calls it through cli.py). It owns the order of
the phases and the time each gets; the work of each phase lives in phases.py, darts/ and bohb/.
"""
from __future__ import annotations

import os
import platform
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from automl_pipeline import phases
from automl_pipeline.data import Dataset, Splits, load_dataset, make_splits
from automl_pipeline.delivery import Delivery
from automl_pipeline.errors import InputError
from automl_pipeline.runlog import RunLog
from automl_pipeline.settings import Settings
from automl_pipeline.training import channel_stats, configure_threads, resolve_device, to_tensor_data, warm_up
from budget import Budget, Watchdog, default_margin_s, install_signal_handlers, process_elapsed_s
from submission import OutputDirError, check_output_dir, write_json

# Seconds kept back at the end for report.md and its plots, on runs long enough to afford them.
PLOTS_RESERVE_S = 10.0
PLOTS_MIN_LIMIT_S = 120.0
# Relative weights of the phases; each phase gets its share of the time left when it starts.
PLAN_OURS = [("first_model", 0.10), ("darts", 0.25), ("bohb", 0.40), ("final_fit", 0.25)]
PLAN_BASELINE = [("first_model", 0.10), ("bohb", 0.60), ("final_fit", 0.30)]
# The watchdog acts this long before the limit: enough to write report.json and report.md (no plots).
WATCHDOG_GRACE_S = 1.5
# Exit code when the run was stopped (limit or signal) before any prediction existed.
NO_PREDICTIONS_EXIT_CODE = 3


def default_max_side(device: torch.device) -> int:
    """Working resolution cap: images larger than this are resized down once, at load time."""
    return 64 if device.type == "cuda" else 32


class RunReport:
    """Collects report.json sections and writes the final report exactly once (main thread,
    watchdog or signal handler: whichever comes first)."""

    def __init__(self, settings: Settings, budget: Budget, out_dir: Path, log: RunLog, *, with_plots: bool):
        self.sections: dict = {"settings": settings.to_json(), "time_limit_s": settings.time_limit_s}
        self.delivery: Delivery | None = None
        self.heldout_labels: np.ndarray | None = None
        self.n_classes = 0
        self._budget = budget
        self._out_dir = out_dir
        self._log = log
        self._with_plots = with_plots
        self._lock = threading.RLock()
        self._finished = False

    def finish(self, status: str) -> None:
        """Write report.json (and report.md); calls after one that completed do nothing.

        Re-entrant: a SIGTERM handled on the main thread while it is inside `finish` writes the
        report again (atomically) before the handler exits the process.
        """
        with self._lock:
            if self._finished:
                return
            if status != "complete":
                self._log.event(status, "writing the best predictions so far and the report")
            report = dict(self.sections)
            report["status"] = status
            report["phases"] = self._budget.phases_report()
            report["events"] = list(self._log.events)
            if self.delivery is not None and self.delivery.best is not None:
                report["final"] = self.delivery.best.summary()
                report["test_metrics"] = self.delivery.heldout_metrics(self.heldout_labels, self.n_classes)
            report["wall_s"] = round(self._budget.elapsed(), 3)
            write_json(self._out_dir / "report.json", report)
            self._log(f"report.json written ({status})")
            self._write_markdown(report, plots=status == "complete")
            self._finished = True

    def _write_markdown(self, report: dict, *, plots: bool) -> None:
        try:
            from automl_pipeline.reporting import write_run_report
        except ImportError as err:  # reporting is optional at run time: the JSON report stands
            self._log(f"report.md not written: {err}")
            return
        plots = plots and self._with_plots and self._budget.hard_remaining() > PLOTS_RESERVE_S / 2
        write_run_report(report, self._out_dir, log=self._log, plots=plots)


def run(settings: Settings) -> int:
    """Run the whole job; returns the process exit code (0 ok, 2 bad input or output folder;
    3 when stopped by the limit or a signal before any prediction was written)."""
    with_plots = settings.time_limit_s >= PLOTS_MIN_LIMIT_S
    margin = default_margin_s(settings.time_limit_s) + (PLOTS_RESERVE_S if with_plots else 0.0)
    budget = Budget(settings.time_limit_s, already_elapsed_s=process_elapsed_s(), margin_s=margin)
    try:
        out_dir = check_output_dir(settings.output_dir)
    except OutputDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log = RunLog(out_dir / "run.log", quiet=settings.quiet, elapsed=budget.elapsed, remaining=budget.remaining)
    report = RunReport(settings, budget, out_dir, log, with_plots=with_plots)

    def stop_early(status: str) -> None:
        """Watchdog or signal: write the report; with no predictions at all, exit with an error."""
        report.finish(status)
        if report.delivery is None or report.delivery.best is None:
            log.error(f"no predictions could be written before the {status.removeprefix('stopped_by_')} "
                      f"stopped the run ({budget.elapsed():.1f}s of {settings.time_limit_s:g}s used)")
            os._exit(NO_PREDICTIONS_EXIT_CODE)

    watchdog = Watchdog(budget, on_timeout=lambda: stop_early("stopped_by_watchdog"), grace_s=WATCHDOG_GRACE_S)
    watchdog.start()
    install_signal_handlers(lambda signum: stop_early("stopped_by_signal"))
    try:
        _execute(settings, budget, out_dir, log, report)
        report.finish("complete")
        return 0
    except InputError as err:
        log.error(str(err))
        return 2
    finally:
        watchdog.stop()
        log.close()


def _execute(settings: Settings, budget: Budget, out_dir: Path, log: RunLog, report: RunReport) -> None:
    device = resolve_device(settings.device)
    threads = configure_threads()
    # torch's one-time start-up costs (its first optimiser imports torch._dynamo: seconds) are paid
    # in a thread while the data loads, not inside the first phase's time.
    warming = threading.Thread(target=warm_up, args=(device,), name="warm-up", daemon=True)
    warming.start()
    report.sections["environment"] = _environment(device, threads)
    log(f"loading {settings.data_dir or 'the built-in digits demo'} on {device}")
    dataset = load_dataset(settings.data_dir, max_side=settings.max_image_side or default_max_side(device))
    splits = make_splits(dataset, seed=settings.seed)
    write_json(out_dir / "splits.json", splits.to_json(settings.seed))
    report.sections["data"] = _data_section(dataset, splits)
    for note in dataset.notes:
        log.event("input", note)

    data = _to_run_data(dataset, splits, device)
    warming.join(timeout=max(0.0, budget.remaining()))
    delivery = Delivery(out_dir, predict_ids=splits.predict.ids, class_names=dataset.class_names, log=log)
    report.delivery, report.heldout_labels, report.n_classes = delivery, splits.test.labels, dataset.n_classes
    delivery.offer(phases.majority_candidate(data, splits.val.labels))

    baseline = settings.method == "baseline"
    budget.plan(PLAN_BASELINE if baseline else PLAN_OURS)
    with budget.start_phase("first_model") as phase:
        spec = phases.first_model_spec(data)
        epoch_s = phases.measure_epoch_seconds(phases.build_network(spec), data, data.batch_size)
        epochs = phases.epochs_that_fit(phase.remaining(), epoch_s)
        log(f"first model: ~{epoch_s:.2f}s/epoch, {epochs} epochs planned")
        config = phases.default_train_config(epochs=epochs, batch_size=data.batch_size, baseline=baseline,
                                             seed=settings.seed)
        candidate, _ = phases.train_candidate("first model", spec, config, data, phase.remaining, log=log)
        delivery.offer(candidate)

    darts = None
    if not baseline:
        with budget.start_phase("darts") as phase:
            darts, why_not = phases.search_architecture(data, phase.remaining, seed=settings.seed, log=log)
        if darts is None:
            log.event("darts_skipped", why_not)
        else:
            report.sections["darts"] = darts.report()

    with budget.start_phase("bohb") as phase:
        bohb, why_not = phases.search_hyperparameters(
            data, darts, phase.remaining, baseline=baseline, seed=settings.seed, out_dir=out_dir,
            workers=settings.workers, nameserver_host=settings.nameserver_host,
            nameserver_port=settings.nameserver_port, log=log)
    if bohb is None:
        log.event("bohb_skipped", why_not)
    else:
        report.sections["bohb"] = bohb.report()
        for error in report.sections["bohb"]["errors"]:
            log.event("failed_trial", error)

    with budget.start_phase("final_fit") as phase:
        source, spec, config_for = phases.final_choice(data, darts, bohb, baseline=baseline, seed=settings.seed)
        for candidate in phases.fit_for_the_time_left(source, spec, config_for, data, phase.remaining, log=log):
            delivery.offer(candidate)


def _to_run_data(dataset: Dataset, splits: Splits, device: torch.device) -> phases.RunData:
    mean, std = channel_stats(splits.train.images)
    tensors = {name: to_tensor_data(getattr(splits, name).images, getattr(splits, name).labels, device, mean, std)
               for name in ("train", "val", "test")}
    predict_is_heldout = splits.predict is splits.test
    predict = None if predict_is_heldout else to_tensor_data(splits.predict.images, None, device, mean, std)
    height, _, channels = dataset.image_shape
    return phases.RunData(train=tensors["train"], val=tensors["val"], heldout=tensors["test"], predict=predict,
                          n_classes=dataset.n_classes, in_channels=channels, image_side=height,
                          train_counts=np.bincount(splits.train.labels, minlength=dataset.n_classes),
                          device=device)


def _data_section(dataset: Dataset, splits: Splits) -> dict:
    def counts(image_set) -> dict:
        per_class = np.bincount(image_set.labels, minlength=dataset.n_classes).tolist()
        return {"count": len(image_set.ids), "per_class": per_class}

    return {
        "format": dataset.format,
        "source": dataset.source,
        "n_classes": dataset.n_classes,
        "class_names": list(dataset.class_names),
        "image_size": list(dataset.image_shape),
        "native_side": dataset.native_side,
        "notes": list(dataset.notes),
        "heldout_source": splits.heldout_source,
        "n_predict": len(splits.predict.ids),
        "splits": {name: counts(getattr(splits, name)) for name in ("train", "val", "test")},
    }


def _environment(device: torch.device, threads: int) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "device_name": name, "torch_threads": threads}
