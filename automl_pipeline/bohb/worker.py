"""One BOHB trial: configuration -> network + training recipe -> 1 - val macro-F1.

Pure functions at the seams (`config_to_network_spec`, `config_to_train_config`),
`evaluate_config` that turns any failure into a worst-loss result, and the
hpbandster `TrialWorker` that runs trials for a master (in-process thread or a
separate process / machine, see `remote.py`).

Contract of `TrialWorker.compute` (what hpbandster calls):
  in:  config (plain-Python dict from the space in `space.py`), budget (epochs,
       float; trained as max(1, round(budget)) epochs), and optionally
       `phase_seconds_left`, the seconds the master's phase had left for this
       trial when it was submitted (see `phase.py`).
  out: {"loss": float in [0, 1], "info": plain-Python dict} - loss = 1 - best val
       macro-F1 (finite; 1.0 for a failed trial).
  raises: nothing for a failing trial (the error is in info["error"]); only
       BaseExceptions that are not Exceptions (KeyboardInterrupt, SystemExit) pass.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from hpbandster.core.worker import Worker

from automl_pipeline.bohb.serialization import to_plain
from automl_pipeline.search_space import DEFAULT_GENOTYPE, NetworkSpec, build_network
from automl_pipeline.search_space.ops import TEMPLATE_OPS
from automl_pipeline.training import TensorData, TrainConfig, classification_metrics, predict, train_model

WORST_LOSS = 1.0
HEADS = {"linear": (), "mlp": (64, 32, 16)}   # the `head` hyperparameter -> NetworkSpec.head_hidden
_BUILD_LOCK = threading.Lock()   # seeding + building is atomic, so in-process workers build reproducibly


@dataclass
class TrialContext:
    """Everything a trial needs besides its configuration; built once per worker.

    darts: a DartsResult (or any object with `genotype`, `alphas_normal`,
      `alphas_reduce`), or None when no DARTS result exists / for the baseline.
    darts_ops: the op names of the alphas' columns (DartsConfig.ops).
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
    baseline: bool = False
    darts_ops: tuple[str, ...] = TEMPLATE_OPS


def n_epochs(budget: float) -> int:
    """hpbandster budgets are floats on a geometric grid; a trial trains round(budget) epochs (>= 1)."""
    return max(1, int(round(float(budget))))


def config_genotype(config: dict, *, darts=None, ops: tuple[str, ...] = TEMPLATE_OPS):
    """The cell genotype a configuration asks for.

    No `cell_source` (baseline, or no DARTS result) -> DEFAULT_GENOTYPE;
    "darts_genotype" -> darts.genotype; "sampled" -> sample_genotype(alphas / temperature, cell_seed).
    """
    source = config.get("cell_source")
    if source is None:
        return DEFAULT_GENOTYPE
    if darts is None:
        raise ValueError(f"cell_source={source!r} needs a DARTS result, but none was given")
    if source == "darts_genotype":
        return darts.genotype
    if source == "sampled":
        from automl_pipeline.darts import sample_genotype
        return sample_genotype(np.asarray(darts.alphas_normal), np.asarray(darts.alphas_reduce), tuple(ops),
                               temperature=float(config["temperature"]), seed=int(config["cell_seed"]))
    raise ValueError(f"unknown cell_source {source!r}")


def config_to_network_spec(config: dict, *, darts, in_channels: int, n_classes: int, image_side: int,
                           ops: tuple[str, ...] = TEMPLATE_OPS) -> NetworkSpec:
    """Configuration -> NetworkSpec (pure; the sampled genotype depends only on config and alphas)."""
    return NetworkSpec(genotype=config_genotype(config, darts=darts, ops=ops), in_channels=int(in_channels),
                       n_classes=int(n_classes), image_side=int(image_side), n_cells=int(config["n_cells"]),
                       base_channels=int(config["base_channels"]), dropout=float(config["dropout"]),
                       head_hidden=HEADS[str(config.get("head", "mlp"))])


def config_to_train_config(config: dict, epochs: int, seed: int) -> TrainConfig:
    """Configuration -> TrainConfig (pure).

    A baseline configuration (no `focal_gamma` key) trains with plain cross-entropy;
    ours with focal loss (gamma, class-weight smoothing; smoothing 0 = no class weights,
    gamma 0 = weighted cross-entropy). The surrogate skip's beta0 is used only when
    `surrogate_skip` is on.
    """
    baseline = "focal_gamma" not in config
    beta0 = float(config.get("beta0", 0.0)) if bool(config.get("surrogate_skip", False)) else 0.0
    return TrainConfig(
        epochs=int(epochs), batch_size=int(config["batch_size"]), lr=float(config["lr"]),
        weight_decay=float(config["weight_decay"]), optimizer=str(config["optimizer"]),
        schedule=str(config["lr_schedule"]),
        loss="ce" if baseline else "focal",
        focal_gamma=0.0 if baseline else float(config["focal_gamma"]),
        class_weight_smoothing=0.0 if baseline else float(config["class_weight_smoothing"]),
        surrogate_beta0=beta0, seed=int(seed), flip=bool(config.get("flip", False)))


def build_trial_network(config: dict, ctx: TrialContext) -> torch.nn.Module:
    """The (seeded) network of a configuration, on ctx.device."""
    spec = config_to_network_spec(config, darts=None if ctx.baseline else ctx.darts, in_channels=ctx.in_channels,
                                  n_classes=ctx.n_classes, image_side=ctx.image_side, ops=ctx.darts_ops)
    with _BUILD_LOCK:
        torch.manual_seed(ctx.seed)
        model = build_network(spec)
    return model.to(ctx.device)


def _error_text(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0] if message else ''}"[:500]


def evaluate_config(config: dict, budget_epochs: float, ctx: TrialContext,
                    time_left: Callable[[], float]) -> dict:
    """Train one configuration for round(budget_epochs) epochs (or until time_left() runs out).

    Returns {"loss": 1 - best val macro-F1, "info": {...}}; never raises for a failing
    trial: loss 1.0 and info["error"] = "Type: message" (OOM, NaN loss, bad config, ...).
    A trial cut by the deadline reports what it reached (stopped_by_deadline=True); one
    the deadline stopped before its first validation pass has evaluated=False, loss 1.0
    and no error. info also has epochs (planned), best_epoch.
    """
    t0 = time.monotonic()
    info: dict = {"val_macro_f1": 0.0, "val_accuracy": 0.0, "per_class_f1": [0.0] * int(ctx.n_classes),
                  "epochs": n_epochs(budget_epochs), "epochs_done": 0, "seconds": 0.0, "n_params": 0,
                  "error": None, "stopped_by_deadline": False, "evaluated": False}
    loss = WORST_LOSS
    model = None
    try:
        model = build_trial_network(config, ctx)
        info["n_params"] = int(sum(p.numel() for p in model.parameters()))
        train_config = config_to_train_config(config, n_epochs(budget_epochs), ctx.seed)
        result = train_model(model, ctx.train, ctx.val, train_config, time_left=time_left,
                             n_classes=ctx.n_classes)
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
                        per_class_f1=[float(v) for v in metrics["per_class_f1"]], evaluated=True)
            loss = 1.0 - f1
        # else: the deadline came before the first validation pass -> worst loss, evaluated=False
    except Exception as exc:   # a crashed trial is a result, never a dead search
        info["error"] = _error_text(exc)
        loss = WORST_LOSS
        if isinstance(exc, RuntimeError) and torch.cuda.is_available():
            torch.cuda.empty_cache()
    finally:
        del model
    info["seconds"] = time.monotonic() - t0
    if not math.isfinite(loss):
        loss = WORST_LOSS
    return {"loss": float(loss), "info": to_plain(info)}


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

    def compute(self, config_id, config, budget, working_directory, phase_seconds_left: float | None = None,
                **kwargs) -> dict:
        received = time.monotonic()

        def trial_time_left() -> float:
            left = self.time_left()
            if phase_seconds_left is not None:
                left = min(left, float(phase_seconds_left) - (time.monotonic() - received))
            return max(0.0, left)

        try:
            result = self.evaluate(to_plain(config), float(budget), self.ctx, trial_time_left)
        except Exception as exc:   # evaluate_config does not raise; a custom evaluate might
            result = {"loss": WORST_LOSS, "info": {"error": _error_text(exc)}}
        result = to_plain(result)
        result["info"]["worker"] = self.worker_id
        return result
