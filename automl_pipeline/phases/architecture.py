"""Phase 2, DARTS: plan a proxy search that fits the phase (or a random cell / none, by the search
options), run it, and say whether its cell is worth using."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

from automl_pipeline.darts import (DartsConfig, DartsResult, estimate_epoch_seconds, random_cell_result, run_darts,
                                   steps_per_epoch)
from automl_pipeline.checkpoints import Checkpoints
from automl_pipeline.phases.common import RunData, TimeLeft
from automl_pipeline.phases.context import RunContext, phase_failed, search_section
from automl_pipeline.search_options import SearchOptions
from automl_pipeline.search_space import TEMPLATE_OPS, default_stem_pool
from automl_pipeline.search_space.ops import EXTRA_OPS
from automl_pipeline.training import make_loss
from automl_pipeline.training.losses import CLASS_WEIGHT_SMOOTHING, FOCAL_GAMMA
from automl_pipeline.training.tensors import random_subset
from budget.reserves import MIN_SEARCH_PHASE_S, PLAN_SHARE

NAME = "darts"
# What this phase leaves in the checkpoint folder for --resume.
PROGRESS_FILE = "darts.pt"             # the search state after every finished epoch (tensors, plain types)
OUTCOME_FILE = "darts_outcome.json"    # the result (DartsResult.report()), or why DARTS was skipped
# DARTS: the poster's 15 epochs at most; fewer than MIN_DARTS_EPOCHS on the full training split and
# the search runs on a random subset instead, never below MIN_DARTS_IMAGES_PER_CLASS on average.
MAX_DARTS_EPOCHS = 15
MIN_DARTS_EPOCHS = 6
MIN_DARTS_IMAGES_PER_CLASS = 20


@dataclass(frozen=True)
class DartsProxy:
    """One size of supernet to search with; `side` caps the image side it sees."""

    n_cells: int
    n_nodes: int
    base_channels: int
    side: int


# Supernets to search with, cheapest first. On 2 CPU cores a full-size supernet (3 cells of 4 nodes on
# 28 px) took ~3 s per architecture + weight step, so a 65 s phase made ~20 steps and learned nothing;
# the cheapest proxy here takes ~0.27 s per step (batch 32, 28 px images searched at 16 px, 2 cores:
# `benchmarks/throughput.py --device cpu --quick`, benchmarks/RESULTS.md "Throughput", 2026-12-02).
DARTS_PROXIES = (DartsProxy(n_cells=2, n_nodes=2, base_channels=8, side=16),
                 DartsProxy(n_cells=2, n_nodes=3, base_channels=16, side=16),
                 DartsProxy(n_cells=3, n_nodes=3, base_channels=16, side=32),
                 DartsProxy(n_cells=3, n_nodes=4, base_channels=16, side=32))
DARTS_BATCH = 32
# Weight learning rate of the proxy search (SGD, cosine to DartsConfig.w_lr_min). The poster's 0.005 is for
# 15 full epochs; in ~130 steps on digits it left the supernet at chance (val accuracy 0.16), 0.05
# reached 0.58 and moved the alphas 10x further (mean normalised entropy 0.90 instead of 0.98).
DARTS_W_LR = 0.05
# DARTS runs only when this many architecture steps fit (whether its cell is then used is decided by
# DartsResult.learned); a richer proxy is timed only while the current one fits RICHER_PROXY_STEPS
# (each probe costs a few steps).
MIN_ARCH_STEPS = 120
RICHER_PROXY_STEPS = 600
# What the run's plan reserves for DARTS (seconds_needed): MIN_ARCH_STEPS of the cheapest proxy with this
# much headroom for the phase's own re-timing (two batches, noisy), and its probes at this multiple of one.
NEED_MARGIN = 1.2
PROBES_PER_PHASE = 2
# With early termination off, the skip limit is more edges than any proxy cell has.
NO_SKIP_LIMIT = 10 ** 6


def darts_config(proxy: DartsProxy, image_side: int, *, epochs: int, seed: int,
                 options: SearchOptions = SearchOptions()) -> DartsConfig:
    """The DartsConfig of a proxy for images of `image_side` (never upsampled), with the DARTS
    switches of the search options (ops, second order, derivation, surrogate skip, early termination)."""
    side = min(image_side, proxy.side)
    return DartsConfig(epochs=epochs, batch_size=DARTS_BATCH, n_cells=proxy.n_cells, n_nodes=proxy.n_nodes,
                       base_channels=proxy.base_channels, w_lr=DARTS_W_LR, stem_pool=default_stem_pool(side),
                       proxy_side=side if side != image_side else None, seed=seed,
                       ops=TEMPLATE_OPS + (EXTRA_OPS if options.extra_ops else ()),
                       second_order=options.second_order, allow_zero=options.allow_zero, grouping=options.grouping,
                       max_skips=options.max_skips, beta0=DartsConfig.beta0 if options.surrogate_skip else 0.0,
                       skip_limit=DartsConfig.skip_limit if options.early_termination else NO_SKIP_LIMIT)


def plan_darts(step_seconds: Callable[[DartsConfig], float], seconds: float, *, n_train: int, n_classes: int,
               image_side: int, seed: int, options: SearchOptions = SearchOptions()
               ) -> tuple[DartsConfig | None, int, str]:
    """(config, training images to search on, "") or (None, 0, why not).

    step_seconds(config) measures one search step. The richest proxy that fits RICHER_PROXY_STEPS
    steps (else the cheapest, if it fits MIN_ARCH_STEPS) searches for MAX_DARTS_EPOCHS epochs at most;
    when fewer than MIN_DARTS_EPOCHS epochs of the whole training split fit, it searches a subset so
    that they do (never below MIN_DARTS_IMAGES_PER_CLASS images per class on average).
    """
    chosen, steps = None, 0
    for proxy in DARTS_PROXIES:
        config = darts_config(proxy, image_side, epochs=MAX_DARTS_EPOCHS, seed=seed, options=options)
        fit = int(PLAN_SHARE * seconds / max(step_seconds(config), 1e-6))
        if chosen is not None and fit < RICHER_PROXY_STEPS:
            break
        if chosen is None and fit < MIN_ARCH_STEPS:
            return None, 0, f"{fit} architecture steps fit in {seconds:.0f}s; at least {MIN_ARCH_STEPS} are needed"
        chosen, steps = config, fit
        if fit < RICHER_PROXY_STEPS:
            break
    full_epoch_steps = steps_per_epoch(n_train, chosen)
    epochs = min(MAX_DARTS_EPOCHS, steps // full_epoch_steps)
    if epochs >= MIN_DARTS_EPOCHS:
        return dataclasses.replace(chosen, epochs=epochs), n_train, ""
    n_subset = (steps // MIN_DARTS_EPOCHS) * chosen.batch_size
    if n_subset < MIN_DARTS_IMAGES_PER_CLASS * n_classes:
        return None, 0, (f"{steps} steps leave {n_subset} images for {MIN_DARTS_EPOCHS} epochs "
                         f"(at least {MIN_DARTS_IMAGES_PER_CLASS} per class are needed)")
    return dataclasses.replace(chosen, epochs=MIN_DARTS_EPOCHS), n_subset, ""


def darts_loss(data: RunData):
    """The loss DARTS searches with: focal with smoothed inverse-frequency class weights."""
    return make_loss("focal", data.train_counts, gamma=FOCAL_GAMMA, smoothing=CLASS_WEIGHT_SMOOTHING, device=data.device)


def measure_step_seconds(data: RunData, config: DartsConfig, loss) -> float:
    """Seconds of one architecture + weight step of `config`'s supernet on the training split (two batches)."""
    return (estimate_epoch_seconds(data.train, data.val, data.n_classes, config, loss, n_batches=2)
            / steps_per_epoch(len(data.train), config))


def seconds_needed(data: RunData, *, seed: int, options: SearchOptions = SearchOptions(),
                   clock: Callable[[], float] = time.monotonic) -> float:
    """Seconds the phase needs to search at all (for the run's plan): MIN_ARCH_STEPS steps of the cheapest
    proxy at the measured step cost, planned at PLAN_SHARE, with NEED_MARGIN, and its timing probes."""
    config = darts_config(DARTS_PROXIES[0], data.image_side, epochs=MAX_DARTS_EPOCHS, seed=seed, options=options)
    started = clock()
    step_s = measure_step_seconds(data, config, darts_loss(data))
    probe_s = clock() - started
    return NEED_MARGIN * MIN_ARCH_STEPS * step_s / PLAN_SHARE + PROBES_PER_PHASE * probe_s


def search_architecture(data: RunData, time_left: TimeLeft, *, seed: int, log: Callable[[str], None],
                        options: SearchOptions = SearchOptions(), progress: dict | None = None,
                        on_checkpoint: Callable[[dict, dict], None] | None = None) -> tuple[DartsResult | None, str]:
    """The DARTS phase: (result, "") or (None, why it was skipped), planned by `plan_darts`.

    progress: {"meta", "state"} of an earlier attempt's last finished epoch (`load_progress`): the
    search continues with that attempt's config and subset, however little time is left (at worst
    it ends at once with the checkpoint's alphas).
    on_checkpoint(state, meta): after every finished epoch; meta says how to rebuild the search.
    """
    loss = darts_loss(data)
    if progress is not None:
        meta = progress["meta"]
        config = DartsConfig.from_json(meta["config"])
        log(f"DARTS: resuming after epoch {int(progress['state']['epoch'])}/{config.epochs}")
    else:
        if time_left() < MIN_SEARCH_PHASE_S:
            return None, f"{time_left():.0f}s is too short for a search (at least {MIN_SEARCH_PHASE_S:.0f}s)"
        measured: dict[DartsConfig, float] = {}

        def step_seconds(config: DartsConfig) -> float:
            measured[config] = measure_step_seconds(data, config, loss)
            return measured[config]

        config, n_train, why_not = plan_darts(step_seconds, time_left(), n_train=len(data.train),
                                              n_classes=data.n_classes, image_side=data.image_side, seed=seed,
                                              options=options)
        if config is None:
            return None, why_not
        fraction = n_train / len(data.train)
        meta = {"config": config.to_json(), "n_train": n_train,
                "n_val": max(config.batch_size, int(len(data.val) * fraction)),
                "step_s": measured[dataclasses.replace(config, epochs=MAX_DARTS_EPOCHS)]}
    train, val = data.train, data.val
    if int(meta["n_train"]) < len(train):
        train = random_subset(train, int(meta["n_train"]), seed)
        val = random_subset(val, min(len(val), int(meta["n_val"])), seed)
    log(f"DARTS: {config.epochs} epochs of {len(train)} training images, {config.n_cells} cells of "
        f"{config.n_nodes} nodes, {config.base_channels} channels, {config.proxy_side or data.image_side} px")

    def on_epoch(row: dict) -> None:
        log(f"DARTS epoch {row['epoch']}/{config.epochs}: skips {row['skip_count']}, beta {row['beta']:.2f}, "
            f"supernet train acc {row['train_acc']:.3f}, val acc {row['val_acc']:.3f}")

    result = run_darts(train, val, data.n_classes, config, time_left=time_left, loss=loss, on_epoch=on_epoch,
                       step_seconds=meta.get("step_s"),
                       on_checkpoint=None if on_checkpoint is None else (lambda state: on_checkpoint(state, meta)),
                       resume=None if progress is None else progress["state"])
    learned, why = result.learned(data.n_classes)
    log(f"DARTS: {result.stop_reason} after {result.epochs_run} epochs, {result.steps_run} architecture steps; "
        + (f"genotype {result.genotype}" if learned else f"not used: {why}"))
    return result, ""


def random_darts_stand_in(options: SearchOptions, *, seed: int) -> DartsResult:
    """The "darts: random" ablation: a random cell (uniform alphas) over the ops DARTS would search."""
    return random_cell_result(TEMPLATE_OPS + (EXTRA_OPS if options.extra_ops else ()), seed=seed)


def run(ctx: RunContext) -> DartsResult | None:
    """The phase: the DARTS result BOHB and the final fit may use (None when DARTS did not run or did
    not learn); writes the report's `darts` section. A resumed run keeps the earlier attempt's
    outcome, or continues its search from the last finished epoch."""
    if ctx.options.darts != "search":
        return _without_search(ctx)
    if ctx.budget.is_skipped(NAME):   # the run's plan gave DARTS' time away (report section written then)
        return None
    store = ctx.store
    outcome = load_outcome(store) if ctx.settings.resume else None
    if outcome is not None:
        ctx.budget.skip_phase(NAME, "resumed: the DARTS outcome of the earlier attempt is kept")
        darts, why_not = outcome
    else:
        progress = load_progress(store) if ctx.settings.resume else None
        with ctx.budget.start_phase(NAME) as phase:
            try:
                darts, why_not = search_architecture(ctx.data, phase.remaining, seed=ctx.seed, log=ctx.log,
                                                     options=ctx.options, progress=progress,
                                                     on_checkpoint=lambda state, meta: save_progress(store, state,
                                                                                                     meta))
                save_outcome(store, darts, why_not)
            except Exception as err:   # noqa: BLE001 - a failed phase must not end the run
                darts, why_not = None, phase_failed(ctx.log, NAME, err)
    if darts is None:
        ctx.search_skipped(NAME, why_not)
        return None
    learned, why_not_used = darts.learned(ctx.data.n_classes)
    section = ctx.report["darts"] = darts.report()
    section.update(status="completed", learned=learned, reason=why_not_used, cell_used=False)
    if not learned:
        ctx.log.event("darts_not_used", why_not_used)
    return darts if learned else None


def _without_search(ctx: RunContext) -> DartsResult | None:
    """The search options turned DARTS off ("off": no DARTS cell) or replaced it by a random cell
    from uniform alphas ("random": it takes the DARTS cell's place in BOHB's pool)."""
    if ctx.options.darts == "off":
        why = "the baseline runs without DARTS" if ctx.baseline else "off in the search options (darts: off)"
        ctx.search_skipped(NAME, why)
        return None
    why = "replaced by a random cell from uniform alphas (search options: darts random)"
    ctx.budget.skip_phase(NAME, why)
    darts = random_darts_stand_in(ctx.options, seed=ctx.seed)
    save_outcome(ctx.store, darts, "")       # `run.py worker --darts-result` rebuilds the same cell from it
    ctx.log.event("darts_random_cell", f"{why}: {darts.genotype}")
    section = ctx.report["darts"] = search_section("skipped", why)
    section.update(genotype=darts.genotype.to_json(), ops=list(darts.ops), random_cell=True)
    return darts


# --------------------------------------------------------------------------- resume

def save_progress(store: Checkpoints, state: dict, meta: dict) -> None:
    """After every finished DARTS epoch: its state and how to rebuild the search (meta)."""
    store.save_tensors(PROGRESS_FILE, {"meta": meta, "state": state})


def load_progress(store: Checkpoints) -> dict | None:
    """{"meta", "state"} of the last finished DARTS epoch, or None (missing or unreadable)."""
    payload = store.load_tensors(PROGRESS_FILE)
    return payload if payload is not None and {"meta", "state"} <= set(payload) else None


def save_outcome(store: Checkpoints, result: DartsResult | None, why_not: str) -> None:
    store.save_json(OUTCOME_FILE, {"skipped": why_not} if result is None else {"result": result.report()})


def load_outcome(store: Checkpoints) -> tuple[DartsResult | None, str] | None:
    """(result, "") or (None, why it was skipped) of an earlier attempt; None when it never ended."""
    saved = store.load_json(OUTCOME_FILE)
    if saved is None:
        return None
    if "result" in saved:
        return DartsResult.from_report(saved["result"]), ""
    return None, str(saved.get("skipped", "skipped"))


def resume_note(store: Checkpoints) -> tuple[int, str]:
    """(DARTS epochs an earlier attempt finished, what a resumed run does with them)."""
    outcome = load_outcome(store)
    if outcome is not None:
        return (outcome[0].epochs_run if outcome[0] is not None else 0), "DARTS finished"
    progress = load_progress(store)
    if progress is not None:
        return int(progress["state"]["epoch"]), "DARTS continues"
    return 0, "DARTS starts afresh"
