"""One BOHB trial: configuration -> network + training recipe -> 1 - val macro-F1.

Pure functions at the seams (`config_to_network_spec`, `config_to_train_config`),
`evaluate_config` that turns any failure into a worst-loss result, and the
hpbandster `TrialWorker` that runs trials for a master (in-process thread or a
separate process / machine, see `remote.py`).

Contract of `TrialWorker.compute` (what hpbandster calls):
  in:  config (plain-Python dict from the space in `space.py`), budget (epochs,
       float; trained as ceil(budget) epochs on a seeded random subset of budget / ceil(budget)
       of the training split, at least 2 x n_classes images: `budget_epochs`), and optionally
       `phase_seconds_left`, the seconds the master's phase had left for this
       trial when it was submitted (see `master.py`), and `fixed`, values of
       hyperparameters left out of the space that complete the configuration.
  out: {"loss": float in [0, 1], "info": plain-Python dict} - loss = 1 - best val
       macro-F1 (finite; 1.0 for a failed trial); info["fixed"] repeats the fixed values,
       so hpbandster's results.json says what every trial trained (kept trials of a resume).
  raises: nothing for a failing trial (the error is in info["error"]); only
       BaseExceptions that are not Exceptions (KeyboardInterrupt, SystemExit) pass.
"""
from __future__ import annotations

import io
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import Pyro4
import Pyro4.errors
import torch
from hpbandster.core.worker import Worker

from submission import atomic_write_bytes, to_jsonable
from automl_pipeline.errors import error_text
from automl_pipeline.bohb.space import DEFAULT_CELL, SHARED_CELL_KEY, STAGE_CELL_KEYS
from automl_pipeline.search_space import DEFAULT_GENOTYPE, Genotype, NetworkSpec, build_network, default_stem_pool
from automl_pipeline.search_space.ops import TEMPLATE_OPS
from automl_pipeline.training import TensorData, TrainConfig, classification_metrics, predict, train_model
from automl_pipeline.training.losses import CLASS_WEIGHT_SMOOTHING, FOCAL_GAMMA
from automl_pipeline.training.tensors import random_subset

WORST_LOSS = 1.0
TRIAL_ERROR_CHARS = 500   # a failed trial's info["error"]: error_text(exc, TRIAL_ERROR_CHARS)
# The settings space.py fixes (see its docstring); also the default network's training (phases/common.py).
# The focal loss's gamma and class-weight smoothing are training.losses' FOCAL_GAMMA, CLASS_WEIGHT_SMOOTHING.
WEIGHT_DECAY = 5e-4
SURROGATE_BETA0 = 1.0
# The genotype pool (`genotype_pool`): sampled cells (softmax(log(w) / T) of the DARTS weights), skip_heavy.
AMPLIFY_TEMPERATURE = 0.5
N_SAMPLED_CELLS = 2
SKIP_HEAVY_EXTRA = 2   # skip edges the pool's "skip_heavy" cell adds to the DARTS normal cell
_BUILD_LOCK = threading.Lock()   # seeding + building is atomic, so in-process workers build reproducibly


@dataclass
class TrialContext:
    """Everything a trial needs besides its configuration; built once per worker.

    darts: a DartsResult (or any object with `genotype`, `alphas_normal`,
      `alphas_reduce`), or None when no DARTS result is used (none, or the baseline).
    darts_ops: the op names of the alphas' columns (DartsConfig.ops).
    batch_size: the batch of every trial (fixed by the data size, not searched).
    seed: one seed for every trial (weights init, shuffling, augmentation), so
      trials differ by their configuration only.
    """

    train: TensorData
    val: TensorData
    n_classes: int
    in_channels: int
    image_side: int
    darts: Any = None
    device: torch.device | str = "cpu"
    seed: int = 0
    darts_ops: tuple[str, ...] = TEMPLATE_OPS
    batch_size: int = 64
    weights_dir: Path | None = None       # trials at keep_from_budget or more save their best weights here
    keep_from_budget: float | None = None  # (hpbandster keeps none); None: no weights kept (remote workers)

    def weights_path(self, config_id, budget: float) -> Path | None:
        """Where the trial (config_id, budget) saves its weights, or None when it keeps none."""
        if self.weights_dir is None or self.keep_from_budget is None or budget < self.keep_from_budget * (1 - 1e-9):
            return None
        return self.weights_dir / trial_weights_name(config_id, budget)


def trial_weights_name(config_id, budget: float) -> str:
    """The file name of a kept trial's weights: config id and budget."""
    return "trial_" + "_".join(str(int(part)) for part in config_id) + f"_b{budget:g}.pt"


def budget_epochs(budget: float) -> tuple[int, float]:
    """(epochs, fraction of the training split) of a budget: budgets are epochs, possibly fractional;
    a trial trains ceil(budget) epochs on a seeded random fraction budget / ceil(budget) of the
    training split (the same images for every trial of that budget)."""
    epochs = max(1, math.ceil(float(budget) - 1e-9))
    return epochs, min(1.0, float(budget) / epochs)


def n_epochs(budget: float) -> int:
    return budget_epochs(budget)[0]


def genotype_pool(darts=None, ops: tuple[str, ...] = TEMPLATE_OPS) -> dict[str, Genotype]:
    """The cells BOHB chooses from, by name (a fixed pool: a categorical the KDE can model):

    - "default": DEFAULT_GENOTYPE, the only cell without a DARTS result;
    - "darts": the DARTS genotype;
    - "sampled_1" .. "sampled_{N_SAMPLED_CELLS}": genotypes sampled from the amplified DARTS distribution
      softmax(log(w) / AMPLIFY_TEMPERATURE) with seeds 1, 2, ...;
    - "skip_heavy": the DARTS genotype with SKIP_HEAVY_EXTRA more skip edges in its normal cell, the
      non-skip edges with the largest skip weight (`darts.with_more_skips`), for the poster's finding that
      BOHB picks more skips with depth. Left out when the ops have no skip_connect.
    """
    pool = {DEFAULT_CELL: DEFAULT_GENOTYPE}
    if darts is not None:
        from automl_pipeline.darts import sample_genotype, with_more_skips
        alphas_normal, alphas_reduce = np.asarray(darts.alphas_normal), np.asarray(darts.alphas_reduce)
        pool["darts"] = darts.genotype
        for k in range(1, N_SAMPLED_CELLS + 1):
            pool[f"sampled_{k}"] = sample_genotype(alphas_normal, alphas_reduce, tuple(ops),
                                                   temperature=AMPLIFY_TEMPERATURE, seed=k)
        if "skip_connect" in ops:
            pool["skip_heavy"] = with_more_skips(darts.genotype, alphas_normal, tuple(ops), extra=SKIP_HEAVY_EXTRA)
    return pool


def config_cells(config: dict) -> tuple[str, ...]:
    """The cell name of each stage a configuration asks for: its STAGE_CELL_KEYS, else its one
    SHARED_CELL_KEY for every stage, else the default cell."""
    if SHARED_CELL_KEY in config:
        return (str(config[SHARED_CELL_KEY]),) * len(STAGE_CELL_KEYS)
    return tuple(str(config.get(key, DEFAULT_CELL)) for key in STAGE_CELL_KEYS)


def config_to_network_spec(config: dict, *, darts, in_channels: int, n_classes: int, image_side: int,
                           ops: tuple[str, ...] = TEMPLATE_OPS) -> NetworkSpec:
    """Configuration -> NetworkSpec (pure; the sampled genotypes depend only on the alphas).

    A configuration with stage cells (STAGE_CELL_KEYS, or one SHARED_CELL_KEY) gets one genotype per stage and their names
    (NetworkSpec.stage_genotypes / stage_cells); one without them gets the default cell everywhere.
    """
    stage_genotypes: tuple[Genotype, ...] = ()
    names = config_cells(config) if any(key in config for key in (*STAGE_CELL_KEYS, SHARED_CELL_KEY)) else ()
    if names:
        pool = genotype_pool(darts, ops)
        missing = sorted(set(names) - set(pool))
        if missing:
            raise ValueError(f"cells {missing} are not in the pool {sorted(pool)} (a DARTS result is needed for them)")
        stage_genotypes = tuple(pool[name] for name in names)
    return NetworkSpec(genotype=stage_genotypes[0] if stage_genotypes else DEFAULT_GENOTYPE,
                       in_channels=int(in_channels), n_classes=int(n_classes), image_side=int(image_side),
                       n_cells=int(config["n_cells"]), base_channels=int(config["base_channels"]),
                       stem_pool=default_stem_pool(int(image_side)),
                       stage_genotypes=stage_genotypes, stage_cells=names)


def config_to_train_config(config: dict, epochs: int, seed: int, *, batch_size: int) -> TrainConfig:
    """Configuration -> TrainConfig (pure), with the fixed settings of space.py.

    A configuration without a `loss` key trains with plain cross-entropy; "focal" is focal loss
    with gamma FOCAL_GAMMA and class weights of smoothing CLASS_WEIGHT_SMOOTHING; "logit_adjusted"
    is logit-adjusted cross-entropy (tau 1, Balanced Softmax). `surrogate_skip` trains with the
    DARTS- surrogate skip from beta0 SURROGATE_BETA0.
    """
    loss = str(config.get("loss", "ce"))
    return TrainConfig(
        epochs=int(epochs), batch_size=int(batch_size), lr=float(config["lr"]), weight_decay=WEIGHT_DECAY,
        optimizer="adamw", schedule="onecycle", loss=loss, focal_gamma=FOCAL_GAMMA,
        class_weight_smoothing=CLASS_WEIGHT_SMOOTHING if loss == "focal" else 0.0,
        surrogate_beta0=SURROGATE_BETA0 if bool(config.get("surrogate_skip", False)) else 0.0,
        seed=int(seed), flip=bool(config.get("flip", False)))


def build_trial_network(config: dict, ctx: TrialContext) -> torch.nn.Module:
    """The (seeded) network of a configuration, on ctx.device."""
    spec = config_to_network_spec(config, darts=ctx.darts, in_channels=ctx.in_channels,
                                  n_classes=ctx.n_classes, image_side=ctx.image_side, ops=ctx.darts_ops)
    with _BUILD_LOCK:
        torch.manual_seed(ctx.seed)
        model = build_network(spec)
    return model.to(ctx.device)


def evaluate_config(config: dict, budget: float, ctx: TrialContext,
                    time_left: Callable[[], float], *, weights_path: Path | None = None) -> dict:
    """Train one configuration for its budget (`budget_epochs`), or until time_left() runs out.

    Returns {"loss": 1 - best val macro-F1, "info": {...}}; never raises for a failing
    trial: loss 1.0 and info["error"] = "Type: message" (OOM, NaN loss, bad config, ...).
    A trial cut by the deadline reports what it reached (stopped_by_deadline=True); one
    the deadline stopped before its first validation pass has evaluated=False, loss 1.0
    and no error. info also has epochs (planned), best_epoch.
    weights_path: where an evaluated trial saves its best weights (atomically; info["weights"] names the file).
    """
    t0 = time.monotonic()
    info: dict = {"val_macro_f1": 0.0, "val_accuracy": 0.0, "per_class_f1": [0.0] * int(ctx.n_classes),
                  "epochs": n_epochs(budget), "epochs_done": 0, "seconds": 0.0, "n_params": 0,
                  "error": None, "stopped_by_deadline": False, "evaluated": False}
    loss = WORST_LOSS
    model = None
    try:
        model = build_trial_network(config, ctx)
        info["n_params"] = int(sum(p.numel() for p in model.parameters()))
        epochs, fraction = budget_epochs(budget)
        train = ctx.train
        if fraction < 1.0:
            train = random_subset(train, max(2 * ctx.n_classes, int(round(fraction * len(train)))), ctx.seed)
        info["train_images"] = len(train)
        train_config = config_to_train_config(config, epochs, ctx.seed, batch_size=ctx.batch_size)
        result = train_model(model, train, ctx.val, train_config, time_left=time_left, n_classes=ctx.n_classes)
        info["epochs_done"] = int(result.epochs_done)
        info["stopped_by_deadline"] = bool(result.stopped_by_deadline)
        info["best_epoch"] = int(result.best_epoch)
        evaluated = any(h.get("val_macro_f1") is not None for h in result.history)
        if evaluated:
            # the model holds the best-by-val weights: one more pass for accuracy and per-class F1
            metrics = classification_metrics(ctx.val.y.cpu().numpy(), predict(model, ctx.val.x), ctx.n_classes)
            f1 = float(metrics["macro_f1"])
            if not math.isfinite(f1):
                raise FloatingPointError(f"validation macro-F1 is {f1}")
            info.update(val_macro_f1=f1, val_accuracy=float(metrics["accuracy"]),
                        per_class_f1=metrics["per_class_f1"], evaluated=True)
            loss = 1.0 - f1
            if weights_path is not None:
                save_weights(weights_path, model.state_dict())
                info["weights"] = weights_path.name
        # else: the deadline came before the first validation pass -> worst loss, evaluated=False
    except Exception as exc:   # a crashed trial is a result, never a dead search
        info["error"] = error_text(exc, TRIAL_ERROR_CHARS)
        loss = WORST_LOSS
        if isinstance(exc, RuntimeError) and torch.cuda.is_available():
            torch.cuda.empty_cache()
    finally:
        del model
    info["seconds"] = time.monotonic() - t0
    if not math.isfinite(loss):
        loss = WORST_LOSS
    return {"loss": float(loss), "info": to_jsonable(info)}


def save_weights(path: Path, state_dict: dict) -> None:
    """A trial's weights as a torch file of CPU tensors (loadable with weights_only=True), written atomically."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


class TrialWorker(Worker):
    """hpbandster worker that evaluates configurations on a TrialContext.

    time_left: this worker's own budget (its process deadline); each trial's
    deadline is the earlier of that and the master's phase deadline (sent with
    the job as `phase_seconds_left`).
    """

    def __init__(self, ctx: TrialContext, *, time_left: Callable[[], float], run_id: str,
                 nameserver: str, nameserver_port: int, host: str | None = None, id: Any = None,
                 logger: logging.Logger | None = None, evaluate: Callable[..., dict] = evaluate_config):
        super().__init__(run_id=run_id, nameserver=nameserver, nameserver_port=nameserver_port, host=host, id=id,
                         logger=logger or logging.getLogger("automl_pipeline.bohb.worker"))
        self.ctx = ctx
        self.time_left = time_left
        self.evaluate = evaluate

    @Pyro4.expose
    @Pyro4.oneway
    def start_computation(self, callback, id, *args, **kwargs):
        """hpbandster's job entry point, with the result sent through `_ResultSink`: a master that
        shut down while the trial ran drops its result instead of killing this thread."""
        return super().start_computation(_ResultSink(callback, self.logger), id, *args, **kwargs)

    def compute(self, config_id, config, budget, working_directory, phase_seconds_left: float | None = None,
                fixed: dict | None = None, **kwargs) -> dict:
        received = time.monotonic()

        def trial_time_left() -> float:
            left = self.time_left()
            if phase_seconds_left is not None:
                left = min(left, float(phase_seconds_left) - (time.monotonic() - received))
            return max(0.0, left)

        try:
            path = None if self.ctx is None else self.ctx.weights_path(config_id, float(budget))
            extra = {} if path is None else {"weights_path": path}
            result = self.evaluate(to_jsonable({**config, **(fixed or {})}), float(budget), self.ctx, trial_time_left,
                                   **extra)
        except Exception as exc:   # evaluate_config does not raise; a custom evaluate might
            result = {"loss": WORST_LOSS, "info": {"error": error_text(exc, TRIAL_ERROR_CHARS)}}
        loss = result.get("loss")
        if not (isinstance(loss, (int, float)) and math.isfinite(loss)):   # hpbandster needs a finite number
            info = dict(result.get("info") or {})
            info["error"] = info.get("error") or f"FloatingPointError: the trial's loss is {loss!r}"
            result = {"loss": WORST_LOSS, "info": info}
        result = to_jsonable(result)
        result["info"]["worker"] = self.worker_id
        result["info"]["fixed"] = to_jsonable(dict(fixed or {}))
        return result


class _ResultSink:
    """The dispatcher's callback proxy, tolerant of a dispatcher that is gone (the master ended its
    phase while this trial ran): the result is dropped with a log line, not a thread traceback."""

    def __init__(self, callback, logger: logging.Logger):
        self.callback, self.logger = callback, logger

    def register_result(self, id, result) -> None:
        try:
            self.callback.register_result(id, result)
        except Pyro4.errors.CommunicationError as err:
            self.logger.info("result of job %s dropped: the master is gone (%s)", id, err)
