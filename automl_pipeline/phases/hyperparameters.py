"""Phase 3, BOHB: the space (with the DARTS cells when DARTS learned), budgets sized from a timed
epoch of the default configuration, and the time-bounded search."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable

import torch
from ConfigSpace import ConfigurationSpace

from automl_pipeline.bohb import (BohbOptions, BohbResult, TrialContext, build_config_space, choose_budgets,
                                  config_to_network_spec, config_to_train_config, fixed_hyperparameters, run_bohb)
from automl_pipeline.bohb.budgets import default_first_configs
from automl_pipeline.bohb.results import TrialRecord, select_incumbent
from automl_pipeline.bohb.space import CELL_CHOICES, SHARED_CELL_KEY, config_fits, n_hyperparameters
from automl_pipeline.bohb.worker import build_trial_network, genotype_pool, trial_weights_name
from automl_pipeline.checkpoints import Checkpoints
from automl_pipeline.darts import DartsResult
from automl_pipeline.delivery import Candidate
from automl_pipeline.phases.common import RunData, TimeLeft, model_candidate, timed_epoch
from automl_pipeline.phases.context import RunContext, phase_failed
from automl_pipeline.search_options import SearchOptions
from automl_pipeline.search_space import TEMPLATE_OPS, build_network
from budget.reserves import MIN_SEARCH_PHASE_S
from submission import to_jsonable

NAME = "bohb"
# What this phase leaves for --resume: hpbandster's logs of every attempt's trials in OUT/bohb/, kept
# at resume in the checkpoint folder, and rewritten as one hpbandster log to warm-start BOHB from.
TRIAL_LOGS = ("configs.json", "results.json", "incumbent.json")
KEPT_FILE = "bohb_kept.json"           # {"batches": [{"configs": [...], "results": [...]}]}, one per attempt
PREVIOUS_DIR = "bohb_previous"         # configs.json / results.json for run_bohb(previous_result=...)
# A kept trial's config id (iteration, stage, index) becomes
# (iteration - (batch + 1) * ID_STRIDE, stage, index), batch its position in KEPT_FILE (one batch per
# earlier attempt that finished trials): negative, so apart from this attempt's ids (iteration >= 0),
# and from the other batches' as long as an attempt runs fewer than ID_STRIDE BOHB iterations.
ID_STRIDE = 100_000
# A resumed run samples BOHB configurations with seed + attempt * this (trials still train with seed).
RESUME_SEED_STRIDE = 7919
# The smallest BOHB budget trains on at least this many batches and images per class.
MIN_TRIAL_STEPS = 6
# Trials at the largest budget save their weights here (OUT/checkpoints/, cleared by a fresh run); the best
# KEEP_TOP_TRIALS of them become candidates (the final ensemble's library), the others' files are deleted.
TRIAL_WEIGHTS_DIR = Path("checkpoints") / "trial_weights"
KEEP_TOP_TRIALS = 3
MIN_TRIAL_IMAGES_PER_CLASS = 10


def search_hyperparameters(data: RunData, darts: DartsResult | None, time_left: TimeLeft, *, seed: int, out_dir,
                           workers: int, nameserver_host: str, nameserver_port: int, log: Callable[[str], None],
                           options: SearchOptions = SearchOptions(), previous=None,
                           sampling_seed: int | None = None, min_epochs: float | None = None
                           ) -> tuple[BohbResult | None, str]:
    """The BOHB phase: (result, "") or (None, why it was skipped).

    darts: a DARTS result whose search learned (its cells join the pool), or None.
    Budgets (epochs, fractional ones on a subset) come from the measured epoch time of the space's
    default configuration and the phase length (bohb.budgets.choose_budgets), for the richest space of
    `search_spaces` whose first bracket fits.
    previous: None, or `space -> directory | None` giving hpbandster logs of earlier trials to
    warm-start from (a resumed run; see `previous_trials_dir`).
    sampling_seed: seed of the configuration sampling (default `seed`); a resumed run uses another
    one so it does not draw the configurations it already evaluated again. Trials still train with `seed`.
    options: the search options: hyperparameters they fix (bohb.space.fixed_hyperparameters) leave the space.
    min_epochs: the plan's floor for the smallest budget (None: only the trial's minimum steps).
    """
    sampling_seed = seed if sampling_seed is None else sampling_seed
    if time_left() < MIN_SEARCH_PHASE_S:
        return None, f"{time_left():.0f}s is too short for a search (at least {MIN_SEARCH_PHASE_S:.0f}s)"
    ops = darts.ops if darts is not None else TEMPLATE_OPS
    levels = search_spaces(darts, ops, options=options, seed=sampling_seed)
    _, space, fixed = levels[0]
    trials = TrialContext(train=data.train, val=data.val, n_classes=data.n_classes, in_channels=data.in_channels,
                          image_side=data.image_side, darts=darts, device=data.device, seed=seed,
                          darts_ops=ops, batch_size=data.batch_size)
    default = {**to_jsonable(dict(space.get_default_configuration())), **fixed}
    epoch_s = timed_epoch(build_trial_network(default, trials), data,
                          config_to_train_config(default, 1, seed, batch_size=data.batch_size))
    floor = max(MIN_TRIAL_STEPS * data.batch_size, MIN_TRIAL_IMAGES_PER_CLASS * data.n_classes) / len(data.train)
    floor = max(floor, min_epochs or 0.0)
    for cell_choice, space, fixed in levels:     # the richest space whose first bracket fits
        budgets = choose_budgets(epoch_s, time_left(), first_configs=default_first_configs(space),
                                 min_budget_floor=floor)
        if budgets is not None:
            break
    if budgets is None:
        return None, (f"{time_left():.0f}s cannot hold a first bracket of {default_first_configs(space)} trials "
                      f"of at least {floor:.2f} epochs (~{epoch_s:.2f}s per epoch of the default configuration)")
    if cell_choice != levels[0][0]:
        log(f"BOHB: cells chosen as '{cell_choice}' (d = {n_hyperparameters(space)}): the first bracket of "
            f"'{levels[0][0]}' does not fit {time_left():.0f}s")
    log(f"BOHB: ~{epoch_s:.2f}s per epoch of the default configuration, {workers} worker(s)")
    previous_dir = None if previous is None else previous(space)
    if previous_dir is not None:
        log(f"BOHB: warm start from the trials in {previous_dir}")
    trials = dataclasses.replace(trials, weights_dir=Path(out_dir) / TRIAL_WEIGHTS_DIR, keep_from_budget=budgets[1])
    search = BohbOptions(min_budget=budgets[0], max_budget=budgets[1], seed=sampling_seed,
                         optimizer=options.optimizer, fixed=fixed, epoch_seconds=epoch_s, n_local_workers=workers,
                         nameserver_host=nameserver_host, nameserver_port=nameserver_port)
    result = run_bohb(trials, config_space=space, options=search, time_left=time_left, out_dir=out_dir,
                      previous_result=previous_dir, log=log)
    if result.warning():
        log(f"BOHB: {result.warning()}")
    return dataclasses.replace(result, cell_choice=cell_choice), ""


def search_spaces(darts: DartsResult | None, ops: tuple[str, ...], *, options: SearchOptions,
                  seed: int) -> list[tuple[str, ConfigurationSpace, dict]]:
    """The spaces BOHB may search, richest first: (cell choice, space, fixed values for every trial).

    With a pool of DARTS cells: a cell per stage ("per_stage", d + 3), one cell for the whole stack
    ("shared", d + 1), or the DARTS cell fixed ("darts_cell"); without: the default cell ("default_cell").
    The fixed values are those of the search options (bohb.space.fixed_hyperparameters) plus, for
    "darts_cell", the cell.
    """
    fixed = fixed_hyperparameters(options)
    pool = tuple(genotype_pool(darts, ops))
    if len(pool) == 1:
        return [("default_cell", build_config_space(seed=seed, cells=pool, fixed=tuple(fixed)), fixed)]
    darts_fixed = {**fixed, SHARED_CELL_KEY: "darts"}
    return [(choice, build_config_space(seed=seed, cells=pool, fixed=tuple(fixed),
                                        cell_choice=choice), fixed) for choice in CELL_CHOICES] + [
        ("darts_cell", build_config_space(seed=seed, cells=pool, fixed=tuple(darts_fixed)),
         darts_fixed)]


def kept_trial_candidates(result: BohbResult, data: RunData, darts: DartsResult | None, weights_dir: Path,
                          *, keep: int = KEEP_TOP_TRIALS) -> list[Candidate]:
    """The best `keep` trials at the largest budget, by validation macro-F1, as candidates built from the
    weights they saved (bohb.worker.evaluate_config); the other trials' weight files are deleted."""
    top = max((t.budget for t in result.trials if t.evaluated), default=None)
    ranked = sorted((t for t in result.trials if t.evaluated and t.budget == top), key=lambda t: -t.val_macro_f1)
    candidates = []
    for trial in ranked:
        path = weights_dir / trial_weights_name(trial.config_id, trial.budget)
        if len(candidates) >= keep or not path.exists():
            continue
        spec = config_to_network_spec(trial.config, darts=darts, in_channels=data.in_channels, n_classes=data.n_classes,
                                      image_side=data.image_side, ops=darts.ops if darts is not None else TEMPLATE_OPS)
        model = build_network(spec).to(data.device)
        model.load_state_dict(torch.load(path, map_location=data.device, weights_only=True))
        trained_with_flips = config_to_train_config(trial.config, 1, 0, batch_size=data.batch_size).flip
        name = "-".join(str(part) for part in trial.config_id)
        candidate = model_candidate("bohb_trial", model, data, flip_tta=trained_with_flips,
                                    description=f"BOHB trial {name} ({trial.budget:g} epochs, its own weights)",
                                    architecture=spec.to_json(), config=trial.config)
        candidate.epochs, candidate.train_s = trial.epochs_done, trial.seconds
        candidates.append(candidate)
    kept = {trial_weights_name(c_id, b) for c_id, b in ((t.config_id, t.budget) for t in ranked[:keep])}
    for path in weights_dir.glob("trial_*.pt") if weights_dir.exists() else ():
        if path.name not in kept:
            path.unlink(missing_ok=True)
    return candidates


def run(ctx: RunContext, darts: DartsResult | None, *, min_epochs: float | None = None) -> BohbResult | None:
    """The phase: BOHB (warm-started from a resumed attempt's trials, which count as its own);
    writes the report's `bohb` section. darts: a DARTS result that learned, or None. min_epochs: the
    smallest budget the run's plan allows (budget.plan: shorter trials rank noise); None: no floor but
    the trial's minimum steps. A phase the plan skipped still reports a resumed attempt's kept trials."""
    settings, store = ctx.settings, ctx.store
    kept = kept_trials(store) if settings.resume else []
    previous = None
    if kept:
        previous = lambda space: previous_trials_dir(store, lambda config: config_fits(space, config))  # noqa: E731
    bohb = None
    if not ctx.budget.is_skipped(NAME):   # skipped: the run's plan gave its time away (and said why)
        with ctx.budget.start_phase(NAME) as phase:
            try:
                bohb, why_not = search_hyperparameters(
                    ctx.data, darts, phase.remaining, seed=ctx.seed, out_dir=store.out_dir,
                    workers=settings.workers, nameserver_host=settings.nameserver_host,
                    nameserver_port=settings.nameserver_port, log=ctx.log, options=ctx.options, previous=previous,
                    sampling_seed=ctx.seed + RESUME_SEED_STRIDE * store.attempt, min_epochs=min_epochs)
            except Exception as err:   # noqa: BLE001 - a failed phase must not end the run
                bohb, why_not = None, phase_failed(ctx.log, NAME, err)
        if bohb is None:
            ctx.search_skipped(NAME, why_not)
    searched = bohb is not None
    skipped_why = (ctx.report.get(NAME) or {}).get("reason", "")
    bohb = merge_kept_trials(bohb, kept)
    if bohb is not None:
        section = ctx.report["bohb"] = bohb.report()
        section["status"] = "completed" if searched else "skipped"
        if not searched:   # only an earlier attempt's trials: say that this attempt did not search
            section["reason"] = f"{skipped_why}; the {len(kept)} trials kept from the earlier attempt stand"
        if kept:
            section["kept_trials"] = [t.to_json() for t in kept]
        for error in section["errors"]:
            ctx.log.event("failed_trial", error)
        try:
            kept_models = kept_trial_candidates(bohb, ctx.data, darts, store.out_dir / TRIAL_WEIGHTS_DIR)
        except Exception as err:   # noqa: BLE001 - the search's result stands without its weights
            kept_models = []
            phase_failed(ctx.log, "kept BOHB trials", err)
        section["kept_models"] = [{"name": c.name, "val_macro_f1": round(c.val_macro_f1, 4)} for c in kept_models]
        for candidate in kept_models:
            ctx.deliver(candidate)
    return bohb


# --------------------------------------------------------------------------- resume

def trial_logs(out_dir: Path) -> tuple[Path, ...]:
    """hpbandster's logs of this phase in OUT/bohb/ (a fresh run removes an earlier run's)."""
    return tuple(Path(out_dir) / "bohb" / name for name in TRIAL_LOGS)


def archive_trials(store: Checkpoints) -> int:
    """Move the trials in OUT/bohb (written by the killed attempt) into KEPT_FILE, once.

    Returns the number of kept finished trials over all earlier attempts. A line cut short by
    the kill, or a result whose configuration line is missing, is dropped.
    """
    kept = _read_kept(store)
    configs = _json_lines(store.out_dir / "bohb" / "configs.json")
    known = {json.dumps(c[0]) for c in configs if isinstance(c, list) and len(c) >= 2}
    results = [r for r in _json_lines(store.out_dir / "bohb" / "results.json")
               if isinstance(r, list) and len(r) == 5 and json.dumps(r[0]) in known]
    seen = {_key(r) for batch in kept for r in batch["results"]}
    if results and not all(_key(r) in seen for r in results):
        kept.append({"configs": configs, "results": results})
        store.save_json(KEPT_FILE, {"batches": kept})
    return sum(len(b["results"]) for b in kept)


def kept_trials(store: Checkpoints) -> list[TrialRecord]:
    """The kept trials as TrialRecords (ids made unique per batch), for the report and incumbent."""
    records: list[TrialRecord] = []
    for b, batch in enumerate(_read_kept(store)):
        configs = {json.dumps(c[0]): c for c in batch["configs"]}
        for config_id, budget, stamps, result, exception in batch["results"]:
            config_line = configs[json.dumps(config_id)]
            config_info = config_line[2] if len(config_line) > 2 and isinstance(config_line[2], dict) else {}
            records.append(TrialRecord.from_hpbandster(
                _unique_id(b, config_id), config_line[1], budget, result, exception, config_info=config_info,
                t_s=-1.0))                     # before any trial of this attempt (t_s >= 0)
    return records


def previous_trials_dir(store: Checkpoints, valid: Callable[[dict], bool]) -> Path | None:
    """Write the kept finished trials as an hpbandster log for `run_bohb(previous_result=...)`.

    Only trials with a finite loss whose configuration is `valid` in the current space are
    written (hpbandster's warm start cannot take crashed runs or foreign configurations).
    None when no trial qualifies.
    """
    config_lines, result_lines = [], []
    for b, batch in enumerate(_read_kept(store)):
        configs = {json.dumps(c[0]): c for c in batch["configs"]}
        used = set()
        for config_id, budget, stamps, result, exception in batch["results"]:
            line = configs[json.dumps(config_id)]
            loss = (result or {}).get("loss")
            if not (isinstance(loss, (int, float)) and math.isfinite(loss)) or not valid(line[1]):
                continue
            new_id = list(_unique_id(b, config_id))
            if json.dumps(config_id) not in used:
                used.add(json.dumps(config_id))
                config_lines.append([new_id, line[1], line[2] if len(line) > 2 else {}])
            result_lines.append([new_id, budget, stamps, result, exception])
    if not result_lines:
        return None
    store.write_json_lines(f"{PREVIOUS_DIR}/configs.json", config_lines)
    store.write_json_lines(f"{PREVIOUS_DIR}/results.json", result_lines)
    return store.path(PREVIOUS_DIR)


def merge_kept_trials(result: BohbResult | None, kept: list[TrialRecord]) -> BohbResult | None:
    """BohbResult over the kept trials of earlier attempts plus this attempt's (incumbent re-chosen
    by the same rule). Without a result of this attempt (BOHB skipped), one over the kept trials."""
    if not kept:
        return result
    if result is None:
        budgets = sorted({t.budget for t in kept})
        result = BohbResult(incumbent_config=None, incumbent_val_macro_f1=0.0, incumbent_budget=0.0,
                            min_budget=budgets[0], max_budget=max(budgets[-1], budgets[0] * 3), eta=3.0, trials=[],
                            configs_sampled=0, model_based_picks=0, model_min_trials=0, trajectory=[],
                            seconds=0.0, n_workers=0, clean_shutdown=True)
    trials = list(kept) + list(result.trials)
    incumbent = select_incumbent(trials)
    return dataclasses.replace(result, trials=trials,
                               incumbent_config=None if incumbent is None else incumbent.config,
                               incumbent_val_macro_f1=0.0 if incumbent is None else incumbent.val_macro_f1,
                               incumbent_budget=0.0 if incumbent is None else incumbent.budget)


def _read_kept(store: Checkpoints) -> list[dict]:
    saved = store.load_json(KEPT_FILE)
    return list(saved["batches"]) if saved is not None and isinstance(saved.get("batches"), list) else []


def _json_lines(path: Path) -> list:
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:       # the last line, cut by the kill
            continue
    return out


def _key(result_line: list) -> str:
    return json.dumps(to_jsonable(result_line), sort_keys=True)


def _unique_id(batch: int, config_id) -> tuple:
    ids = [int(v) for v in config_id]
    return (ids[0] - (batch + 1) * ID_STRIDE, *ids[1:])
