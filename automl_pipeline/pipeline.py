"""The run: data -> splits -> first model -> DARTS -> BOHB -> final fit -> report, under one budget.

`run(settings)` is the one entry point (run.py calls it through cli.py). It owns the order of
the phases and the time each gets; the work of each phase lives in phases.py, darts/ and bohb/.
"""
from __future__ import annotations

import os
import platform
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from automl_pipeline.phases import architecture, common, final_fit, first_model, hyperparameters
from automl_pipeline.bohb import BohbResult
from automl_pipeline.bohb.space import DEFAULT_CELL
from automl_pipeline.bohb.worker import config_cells
from automl_pipeline.checkpoints import Checkpoints, config_fits, fingerprint, merge_kept_trials
from automl_pipeline.darts import DartsResult
from automl_pipeline.data import Dataset, Splits, load_dataset, make_splits
from automl_pipeline.delivery import Delivery
from automl_pipeline.errors import InputError
from automl_pipeline.runlog import RunLog
from automl_pipeline.settings import Settings
from automl_pipeline.training import channel_stats, configure_threads, resolve_device, to_tensor_data, warm_up
from budget import Budget, Watchdog, default_margin_s, install_signal_handlers, process_elapsed_s
from submission import OutputDirError, check_output_dir, write_json

# Seconds kept back at the end for report.md and its plots, on runs long enough to afford them.
PLOTS_RESERVE_S = 6.0   # measured: 3.6 s for all plots of a digits run on 2 cores
PLOTS_MIN_LIMIT_S = 120.0
# Relative weights of the phases; each phase gets its share of the time left when it starts.
PLAN_OURS = [("first_model", 0.10), ("darts", 0.20), ("bohb", 0.35), ("final_fit", 0.35)]
PLAN_BASELINE = [("first_model", 0.10), ("bohb", 0.60), ("final_fit", 0.30)]
# The first model gets at least this many seconds (at most FIRST_MODEL_MAX_SHARE of the time left):
# on short runs its 10 % share was a second or two, and it trained a few images into a useless model.
FIRST_MODEL_MIN_S = 10.0
FIRST_MODEL_MAX_SHARE = 0.9
# The watchdog acts this long before the limit: enough to write report.json and report.md (no plots).
WATCHDOG_GRACE_S = 1.5
# The report waits this long for a delivery in progress (predictions + model.pt) to finish writing;
# well inside the watchdog's grace.
DELIVERY_WAIT_S = 0.4
# Exit code when the run was stopped (limit or signal) before any prediction existed.
NO_PREDICTIONS_EXIT_CODE = 3
# A resumed run samples BOHB configurations with seed + attempt * this (trials still train with seed).
RESUME_SEED_STRIDE = 7919


def default_max_side(device: torch.device) -> int:
    """Working resolution cap: images larger than this are resized down once, at load time."""
    return 64 if device.type == "cuda" else 32


def search_section(status: str, reason: str) -> dict:
    """The report's `darts` / `bohb` section of a search that did not run (status "skipped" or "not_run")."""
    return {"status": status, "reason": reason, "arch_steps": 0, "cell_used": False, "n_trials": 0,
            "model_based_picks": 0}


class RunReport:
    """Collects report.json sections and writes the final report exactly once (main thread,
    watchdog or signal handler: whichever comes first)."""

    def __init__(self, settings: Settings, budget: Budget, out_dir: Path, log: RunLog, *, with_plots: bool):
        self.sections: dict = {"settings": settings.to_json(), "time_limit_s": settings.time_limit_s,
                               "darts": search_section("not_run", "the run stopped before this phase"),
                               "bohb": search_section("not_run", "the run stopped before this phase")}
        if settings.method == "baseline":
            self.sections["darts"] = search_section("skipped", "the baseline runs without DARTS")
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
            best = self.delivery.settled_best(DELIVERY_WAIT_S) if self.delivery is not None else None
            if best is not None:
                report["final"] = best.summary()
                report["test_metrics"] = best.heldout_metrics(self.heldout_labels, self.n_classes)
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
        plots = plots and self._with_plots and self._budget.hard_remaining() > PLOTS_RESERVE_S
        write_run_report(report, self._out_dir, log=self._log, plots=plots)


def run(settings: Settings) -> int:
    """Run the whole job; returns the process exit code (0 ok, 2 bad input or output folder or a
    refused --resume; 3 when stopped by the limit or a signal before any prediction was written;
    130 after SIGINT, from the signal handler).

    A phase that raises is recorded as a `phase_failed` event and the run goes on with what it
    has; only an error outside the phases ends it (report status "crashed", the traceback raised)."""
    with_plots = settings.time_limit_s >= PLOTS_MIN_LIMIT_S
    margin = default_margin_s(settings.time_limit_s) + (PLOTS_RESERVE_S if with_plots else 0.0)
    budget = Budget(settings.time_limit_s, already_elapsed_s=process_elapsed_s(), margin_s=margin)
    try:
        out_dir = check_output_dir(settings.output_dir)
    except OutputDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log = RunLog(out_dir / "run.log", quiet=settings.quiet, elapsed=budget.elapsed, remaining=budget.remaining,
                 append=settings.resume)
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
    except Exception as err:   # a bug: still leave the report next to the predictions already written
        log.error(f"the run crashed: {type(err).__name__}: {err}")
        report.finish("crashed")
        raise
    finally:
        watchdog.stop()
        log.close()


def _execute(settings: Settings, budget: Budget, out_dir: Path, log: RunLog, report: RunReport) -> None:
    """Load the data, deliver the fallback, then run the phases of the plan in order."""
    run = _Run.load(settings, budget, out_dir, log, report)
    budget.plan(phase_plan(budget.remaining(), baseline=run.baseline))
    run.first_model_phase()
    darts = None if run.baseline else run.darts_phase()
    bohb = run.bohb_phase(darts)
    run.final_fit_phase(darts, bohb)
    run.note_cell_use(bohb)


def phase_plan(remaining_s: float, *, baseline: bool) -> list[tuple[str, float]]:
    """Relative phase weights: PLAN_OURS / PLAN_BASELINE, the first model raised to FIRST_MODEL_MIN_S."""
    plan = PLAN_BASELINE if baseline else PLAN_OURS
    (first_name, first), rest = plan[0], plan[1:]
    raised = max(first, min(FIRST_MODEL_MAX_SHARE, FIRST_MODEL_MIN_S / max(remaining_s, 1e-9)))
    scale = (1.0 - raised) / sum(weight for _, weight in rest)
    return [(first_name, raised)] + [(name, weight * scale) for name, weight in rest]


@dataclass
class _Run:
    """What the phases of one run share; one method per phase of the plan.

    A phase that raises is recorded (`_phase_failed`) and the run goes on with what it has.
    """

    settings: Settings
    budget: Budget
    out_dir: Path
    log: RunLog
    report: RunReport
    checkpoints: Checkpoints
    data: common.RunData
    delivery: Delivery
    resumed: dict | None

    @property
    def baseline(self) -> bool:
        return self.settings.method == "baseline"

    @classmethod
    def load(cls, settings: Settings, budget: Budget, out_dir: Path, log: RunLog, report: RunReport) -> "_Run":
        """Data, splits and tensors; the resumed attempt's work; the majority-class fallback delivered."""
        device = resolve_device(settings.device)
        threads = configure_threads()
        max_side = settings.max_image_side or default_max_side(device)
        checkpoints = Checkpoints(out_dir)
        checkpoints.start(fingerprint(data_dir=settings.data_dir, method=settings.method, seed=settings.seed,
                                      image_side_cap=max_side, search=settings.search.to_json()),
                          resume=settings.resume)
        # torch's one-time start-up costs (its first optimiser imports torch._dynamo: seconds) are paid
        # in a thread while the data loads, not inside the first phase's time.
        warming = threading.Thread(target=warm_up, args=(device,), name="warm-up", daemon=True)
        warming.start()
        report.sections["environment"] = _environment(device, threads)
        log(f"loading {settings.data_dir or 'the built-in digits demo'} on {device}")
        dataset = load_dataset(settings.data_dir, max_side=max_side)
        splits = make_splits(dataset, seed=settings.seed)
        splits_json = splits.to_json(settings.seed)
        if settings.resume:
            checkpoints.check_splits(splits_json)
        write_json(out_dir / "splits.json", splits_json)
        report.sections["data"] = _data_section(dataset, splits)
        for note in dataset.notes + splits.notes:
            log.event("input", note)

        data = _to_run_data(dataset, splits, device)
        warming.join(timeout=max(0.0, budget.remaining()))
        delivery = Delivery(out_dir, predict_ids=splits.predict.ids, class_names=dataset.class_names, log=log)
        report.delivery, report.heldout_labels, report.n_classes = delivery, splits.test.labels, dataset.n_classes
        resumed = _resume(settings, checkpoints, delivery, data, log, report) if settings.resume else None
        run = cls(settings=settings, budget=budget, out_dir=out_dir, log=log, report=report,
                  checkpoints=checkpoints, data=data, delivery=delivery, resumed=resumed)
        run.deliver(common.majority_candidate(data, splits.val.labels))
        return run

    def deliver(self, candidate) -> None:
        """Offer a candidate; when it becomes the delivered model, checkpoint it for --resume."""
        if self.delivery.offer(candidate):
            self.checkpoints.save_delivered(candidate)

    def first_model_phase(self) -> None:
        if self.resumed is not None and self.resumed["trained_model_kept"]:
            self.budget.skip_phase("first_model", "resumed: the delivered trained model is kept")
            return
        with self.budget.start_phase("first_model") as phase:
            try:
                self.deliver(first_model.train_first_model(self.data, phase.remaining, baseline=self.baseline,
                                                      seed=self.settings.seed, log=self.log,
                                                      options=self.settings.search))
            except Exception as err:   # noqa: BLE001 - a failed phase must not end the run
                _phase_failed(self.log, "first_model", err)

    def darts_phase(self) -> DartsResult | None:
        mode = self.settings.search.darts
        if mode != "search":
            return self._no_darts_search(mode)
        resume = self.settings.resume
        outcome = self.checkpoints.load_darts_outcome() if resume else None
        if outcome is not None:
            self.budget.skip_phase("darts", "resumed: the DARTS outcome of the earlier attempt is kept")
            darts, why_not = outcome
        else:
            progress = self.checkpoints.load_darts_progress() if resume else None
            with self.budget.start_phase("darts") as phase:
                try:
                    darts, why_not = architecture.search_architecture(
                        self.data, phase.remaining, seed=self.settings.seed, log=self.log,
                        options=self.settings.search, progress=progress,
                        on_checkpoint=self.checkpoints.save_darts_progress)
                    self.checkpoints.save_darts_outcome(darts, why_not)
                except Exception as err:   # noqa: BLE001
                    darts, why_not = None, _phase_failed(self.log, "darts", err)
        if darts is None:
            self.log.event("darts_skipped", why_not)
            self.report.sections["darts"] = search_section("skipped", why_not)
            return None
        learned, why_not_used = darts.learned(self.data.n_classes)
        section = self.report.sections["darts"] = darts.report()
        section.update(status="completed", learned=learned, reason=why_not_used, cell_used=False)
        if not learned:
            self.log.event("darts_not_used", why_not_used)
        return darts if learned else None

    def _no_darts_search(self, mode: str) -> DartsResult | None:
        """The search options turned DARTS off ("off": no DARTS cell) or replaced it by a random cell
        from uniform alphas ("random": it takes the DARTS cell's place in BOHB's pool)."""
        if mode == "off":
            why = "off in the search options (darts: off)"
            self.budget.skip_phase("darts", why)
            self.log.event("darts_skipped", why)
            self.report.sections["darts"] = search_section("skipped", why)
            return None
        why = "replaced by a random cell from uniform alphas (search options: darts random)"
        self.budget.skip_phase("darts", why)
        darts = architecture.random_darts_stand_in(self.settings.search, seed=self.settings.seed)
        self.log.event("darts_random_cell", f"{why}: {darts.genotype}")
        section = self.report.sections["darts"] = search_section("skipped", why)
        section.update(genotype=darts.genotype.to_json(), ops=list(darts.ops), random_cell=True)
        return darts

    def bohb_phase(self, darts: DartsResult | None) -> BohbResult | None:
        """BOHB (warm-started from a resumed attempt's trials); the kept trials count as its own."""
        settings, checkpoints = self.settings, self.checkpoints
        kept = checkpoints.kept_trials() if settings.resume else []
        previous = None
        if kept:
            previous = lambda space: checkpoints.previous_bohb_dir(lambda config: config_fits(space, config))  # noqa: E731
        with self.budget.start_phase("bohb") as phase:
            try:
                bohb, why_not = hyperparameters.search_hyperparameters(
                    self.data, darts, phase.remaining, baseline=self.baseline, seed=settings.seed,
                    out_dir=self.out_dir, workers=settings.workers, nameserver_host=settings.nameserver_host,
                    nameserver_port=settings.nameserver_port, log=self.log, options=settings.search,
                    previous=previous,
                    sampling_seed=settings.seed + RESUME_SEED_STRIDE * checkpoints.attempt)
            except Exception as err:   # noqa: BLE001
                bohb, why_not = None, _phase_failed(self.log, "bohb", err)
        if bohb is None:
            self.log.event("bohb_skipped", why_not)
            self.report.sections["bohb"] = search_section("skipped", why_not)
        bohb = merge_kept_trials(bohb, kept)
        if bohb is not None:
            section = self.report.sections["bohb"] = bohb.report()
            section["status"] = "completed"
            if kept:
                section["kept_trials"] = [t.to_json() for t in kept]
            for error in section["errors"]:
                self.log.event("failed_trial", error)
        return bohb

    def note_cell_use(self, bohb: BohbResult | None) -> None:
        """darts.cell_used: a cell of the delivered model came from the DARTS search (its genotype or
        one sampled from or derived from its weights, in any stage)."""
        section, best = self.report.sections.get("darts"), self.delivery.best
        if section is None or best is None:
            return
        cells: tuple[str, ...] = ()
        if best.source == "bohb_incumbent" and bohb is not None and bohb.incumbent_config is not None:
            cells = config_cells(bohb.incumbent_config)
        section["cell_used"] = best.source == "darts_cell" or any(cell != DEFAULT_CELL for cell in cells)

    def final_fit_phase(self, darts: DartsResult | None, bohb: BohbResult | None) -> None:
        with self.budget.start_phase("final_fit") as phase:
            try:
                source, description, spec, config_for = final_fit.final_choice(
                    self.data, darts, bohb, baseline=self.baseline, seed=self.settings.seed,
                    options=self.settings.search)
                for candidate in final_fit.fit_for_the_time_left(source, description, spec, config_for, self.data,
                                                              phase.remaining, log=self.log):
                    self.deliver(candidate)
            except Exception as err:   # noqa: BLE001
                _phase_failed(self.log, "final_fit", err)


def _phase_failed(log: RunLog, name: str, err: Exception) -> str:
    """Record a phase that raised; the run goes on with the best model delivered so far."""
    text = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]
    log.event("phase_failed", f"{name}: {text}; the run goes on with what it has")
    return f"failed ({text})"


def _resume(settings: Settings, checkpoints: Checkpoints, delivery: Delivery, data: common.RunData, log: RunLog,
            report: RunReport) -> dict:
    """Take over what the killed attempt left: its delivered model, DARTS epochs and BOHB trials.

    Records one `resume` event and the report's `resume` section; returns that section.
    """
    n_predict = len(data.heldout) if data.predict is None else len(data.predict)
    candidate, rewrite, note = checkpoints.load_delivered(n_predict, len(data.heldout))
    if candidate is not None:
        if rewrite:
            delivery.offer(candidate)
            checkpoints.save_delivered(candidate)
        else:
            delivery.best = candidate
    n_trials = checkpoints.archive_bohb()
    outcome = checkpoints.load_darts_outcome()
    progress = checkpoints.load_darts_progress()
    if settings.method == "baseline":
        darts_epochs, darts_note = 0, "no DARTS in the baseline"
    elif outcome is not None:
        darts_epochs, darts_note = (outcome[0].epochs_run if outcome[0] is not None else 0), "DARTS finished"
    else:
        darts_epochs = 0 if progress is None else int(progress["state"]["epoch"])
        darts_note = "DARTS continues" if progress is not None else "DARTS starts afresh"
    section = {"attempt": checkpoints.attempt, "from": str(checkpoints.dir), "darts_epochs_kept": darts_epochs,
               "bohb_trials_kept": n_trials, "delivered": note,
               "trained_model_kept": candidate is not None and candidate.source != "majority_fallback"}
    report.sections["resume"] = section
    log.event("resume", f"resumed from {checkpoints.dir} (attempt {checkpoints.attempt}): {darts_epochs} DARTS "
                        f"epochs, {n_trials} BOHB trials kept ({darts_note}); delivered model: {note}")
    return section


def _to_run_data(dataset: Dataset, splits: Splits, device: torch.device) -> common.RunData:
    mean, std = channel_stats(splits.train.images)
    tensors = {name: to_tensor_data(getattr(splits, name).images, getattr(splits, name).labels, device, mean, std)
               for name in ("train", "val", "test")}
    predict_is_heldout = splits.predict is splits.test
    predict = None if predict_is_heldout else to_tensor_data(splits.predict.images, None, device, mean, std)
    height, _, channels = dataset.image_shape
    return common.RunData(train=tensors["train"], val=tensors["val"], heldout=tensors["test"], predict=predict,
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
        "notes": list(dataset.notes + splits.notes),
        "train_only_classes": [dataset.class_names[label] for label in splits.train_only],
        "heldout_source": splits.heldout_source,
        "n_predict": len(splits.predict.ids),
        "splits": {name: counts(getattr(splits, name)) for name in ("train", "val", "test")},
    }


def _environment(device: torch.device, threads: int) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "device_name": name, "torch_threads": threads}
