"""The run: data -> splits -> first model -> DARTS -> BOHB -> final fit -> report, under one budget.

`run(settings)` is the one entry point (run.py calls it through cli.py). It loads the data, owns
the order of the phases and the time each gets, and writes the report; each phase (its gate, plan,
resume data and report section) lives in its module of automl_pipeline/phases/.
"""
from __future__ import annotations

import os
import platform
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from automl_pipeline.bohb import require_hmac_key
from automl_pipeline.checkpoints import Checkpoints, fingerprint
from automl_pipeline.data import Dataset, Splits, load_dataset, make_splits
from automl_pipeline.delivery import Delivery, majority_fallback, validation_vs_heldout
from automl_pipeline.errors import InputError
from automl_pipeline.phases import architecture, common, final_fit, first_model, hyperparameters
from automl_pipeline.phases.context import RunContext, phase_failed, search_section
from automl_pipeline.runlog import RunLog
from automl_pipeline.settings import Settings
from automl_pipeline.training import channel_stats, configure_threads, resolve_device, to_tensor_data, warm_up
from budget import Budget, Watchdog, default_margin_s, install_signal_handlers, process_elapsed_s
from budget.plan import DARTS_MIN_S, RunFacts, RunPlan, plan_run
from budget.reserves import (DELIVERY_WAIT_S, MIN_SEARCH_PHASE_S, PLOTS_MIN_LIMIT_S, PLOTS_RESERVE_S,
                             WATCHDOG_GRACE_S)
from submission import OutputDirError, check_output_dir, write_json

# Relative weights of the phases until the first model has measured what budget.plan.plan_run needs (and
# for the whole run when it could not: a resumed run that kept its model, a first model that failed); each
# phase gets its share of the time left when it starts. One plan for both methods: the baseline's DARTS
# phase skips itself (search_options.BASELINE) and its time rolls over.
INITIAL_PLAN = [("first_model", 0.10), ("darts", 0.20), ("bohb", 0.35), ("final_fit", 0.35)]
# The first model gets at least this many seconds (at most FIRST_MODEL_MAX_SHARE of the time left):
# on short runs its 10 % share was a second or two, and it trained a few images into a useless model.
FIRST_MODEL_MIN_S = 10.0
FIRST_MODEL_MAX_SHARE = 0.9
# Exit code when the run was stopped (limit or signal) before any prediction existed.
NO_PREDICTIONS_EXIT_CODE = 3


def default_max_side(device: torch.device) -> int:
    """Working resolution cap: images larger than this are resized down once, at load time."""
    return 64 if device.type == "cuda" else 32


class RunReport:
    """Collects report.json sections and writes the final report exactly once (main thread,
    watchdog or signal handler: whichever comes first)."""

    def __init__(self, settings: Settings, budget: Budget, out_dir: Path, log: RunLog, *, with_plots: bool):
        self.sections: dict = {"settings": settings.to_json(), "time_limit_s": settings.time_limit_s,
                               "darts": search_section("not_run", "the run stopped before this phase"),
                               "bohb": search_section("not_run", "the run stopped before this phase")}
        self.delivery: Delivery | None = None
        self.test_labels: np.ndarray | None = None
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
                report["test_metrics"] = best.test_metrics(self.test_labels, self.n_classes)
                report["candidates"] = validation_vs_heldout(list(self.delivery.pool), self.test_labels,
                                                             self.n_classes)
                runner_up = self.delivery.runner_up
                if runner_up is not None and "ensemble" in report:
                    report["ensemble"] = {**report["ensemble"], "heldout_macro_f1": {
                        best.name: report["test_metrics"]["macro_f1"],
                        runner_up.name: runner_up.test_metrics(self.test_labels, self.n_classes)["macro_f1"]}}
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
    refused --resume, a name server off loopback without AUTOML_BOHB_HMAC_KEY; 3 when stopped by the limit or a signal before any prediction was written;
    130 after SIGINT, from the signal handler).

    A phase that raises is recorded as a `phase_failed` event and the run goes on with what it
    has; only an error outside the phases ends it (report status "crashed", the traceback raised)."""
    with_plots = settings.time_limit_s >= PLOTS_MIN_LIMIT_S
    margin = default_margin_s(settings.time_limit_s) + (PLOTS_RESERVE_S if with_plots else 0.0)
    budget = Budget(settings.time_limit_s, already_elapsed_s=process_elapsed_s(), margin_s=margin)
    try:
        require_hmac_key(settings.nameserver_host)   # off loopback, remote workers need the shared secret
        out_dir = check_output_dir(settings.output_dir)
    except (OutputDirError, InputError) as err:
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
    ctx = _load(settings, budget, out_dir, log, report)
    budget.plan(phase_plan(budget.remaining()))
    epoch_s = first_model.run(ctx)
    plan = None
    if epoch_s is not None:
        try:
            plan = _replan(ctx, epoch_s)
        except Exception as err:   # noqa: BLE001 - the initial plan stands
            phase_failed(ctx.log, "plan", err)
    darts = architecture.run(ctx)
    bohb = hyperparameters.run(ctx, darts, min_epochs=None if plan is None else plan.ranking_epochs)
    final_fit.run(ctx, darts, bohb)


def _replan(ctx: RunContext, epoch_s: float) -> RunPlan:
    """The plan from the first model's epoch cost (budget.plan.plan_run): searches that cannot rank in the
    time left are skipped with the plan's sentence, the others get their needs and a share of the rest."""
    darts_here = plan_darts_here(ctx)
    timed = darts_here and ctx.budget.remaining() >= MIN_SEARCH_PHASE_S    # else no search runs: not worth a probe
    darts_s = architecture.seconds_needed(ctx.data, seed=ctx.seed, options=ctx.options) if timed else DARTS_MIN_S
    plan = plan_run(RunFacts(seconds_left=ctx.budget.remaining(), epoch_s=epoch_s, darts_enabled=darts_here,
                             darts_s=darts_s))
    ctx.report["plan"] = plan.to_json()
    ctx.log.event("plan", plan.reason)
    for name, why in plan.skipped.items():
        ctx.search_skipped(name, why)
    weights = [(name, max(weight, 1e-9)) for name, weight in plan.weights]
    if not darts_here:   # DARTS off or random: its phase records why itself, in its place
        weights.insert(0, ("darts", 1e-9))
    ctx.budget.plan(weights)
    return plan


def plan_darts_here(ctx: RunContext) -> bool:
    """Whether the plan decides DARTS' time: only for a DARTS search (search option darts: "search")."""
    return ctx.options.darts == "search"


def phase_plan(remaining_s: float) -> list[tuple[str, float]]:
    """Relative phase weights: INITIAL_PLAN, the first model raised to FIRST_MODEL_MIN_S."""
    plan = INITIAL_PLAN
    (first_name, first), rest = plan[0], plan[1:]
    raised = max(first, min(FIRST_MODEL_MAX_SHARE, FIRST_MODEL_MIN_S / max(remaining_s, 1e-9)))
    scale = (1.0 - raised) / sum(weight for _, weight in rest)
    return [(first_name, raised)] + [(name, weight * scale) for name, weight in rest]


def _load(settings: Settings, budget: Budget, out_dir: Path, log: RunLog, report: RunReport) -> RunContext:
    """Data, splits and tensors; the resumed attempt's work; the majority-class fallback delivered."""
    device = resolve_device(settings.device)
    threads = configure_threads()
    max_side = settings.max_image_side or default_max_side(device)
    checkpoints = Checkpoints(out_dir)
    checkpoints.start(fingerprint(data_dir=settings.data_dir, method=settings.method, seed=settings.seed,
                                  image_side_cap=max_side, search=settings.search.to_json()),
                      resume=settings.resume, stale=hyperparameters.trial_logs(out_dir))
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
    for note in (*dataset.notes, *splits.notes):
        log.event("input", note)

    # Predictions on disk before the tensors are made: on 50,000 images their conversion and torch's
    # warm-up took longer than a 12 s limit's work time on a shared core, and the run ended with none.
    delivery = Delivery(out_dir, predict_ids=splits.predict.ids, class_names=dataset.class_names, log=log)
    report.delivery, report.test_labels, report.n_classes = delivery, splits.test.labels, dataset.n_classes
    resumed = _resume(settings, checkpoints, delivery, splits, log, report) if settings.resume else None
    fallback = majority_fallback(np.bincount(splits.train.labels, minlength=dataset.n_classes), splits.val.labels,
                                 n_predict=len(splits.predict.ids), n_test=len(splits.test.ids))
    if delivery.offer(fallback):
        checkpoints.save_delivered(fallback)

    data = _to_run_data(dataset, splits, device)
    warming.join(timeout=max(0.0, budget.remaining()))
    return RunContext(settings=settings, budget=budget, data=data, log=log, store=checkpoints, report=report.sections,
                      delivery=delivery, resumed=resumed)


def _resume(settings: Settings, checkpoints: Checkpoints, delivery: Delivery, splits: Splits, log: RunLog,
            report: RunReport) -> dict:
    """Take over what the killed attempt left: its delivered model, DARTS epochs and BOHB trials.

    Records one `resume` event and the report's `resume` section; returns that section.
    """
    candidate, rewrite, note = checkpoints.load_delivered(len(splits.predict.ids), len(splits.test.ids))
    if candidate is not None:
        if rewrite:
            delivery.offer(candidate)
            checkpoints.save_delivered(candidate)
        else:
            delivery.best = candidate
    n_trials = hyperparameters.archive_trials(checkpoints)
    if settings.options.darts != "search":
        darts_epochs, darts_note = 0, "no DARTS search"
    else:
        darts_epochs, darts_note = architecture.resume_note(checkpoints)
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
    predict_is_test = splits.predict is splits.test
    predict = None if predict_is_test else to_tensor_data(splits.predict.images, None, device, mean, std)
    height, _, channels = dataset.image_shape
    return common.RunData(train=tensors["train"], val=tensors["val"], test=tensors["test"], predict=predict,
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
