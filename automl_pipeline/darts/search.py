"""Bilevel DARTS search under a deadline, with DARTS- surrogate skips and
skip-based early termination (ZeroLess DARTS).

One search step = an architecture step on a val batch (Adam on the alphas;
first-order by default, DARTS' second-order finite-difference approximation
with config.second_order) followed by a weight step on a train batch (SGD with
momentum, weight decay, gradient clipping), as in the DARTS code.

Per epoch e of E planned epochs:
- weight lr = cosine from w_lr (epoch 0) to w_lr_min (epoch E);
- surrogate beta = `training.surrogate_beta(beta0, e, max(E - 1, 1))`, linear from beta0 at
  epoch 0 to 0 at the last planned epoch (beta0 throughout when E == 1);
- after the epoch, count normal-cell edges whose softmaxed skip_connect weight
  exceeds skip_threshold; more than skip_limit -> stop and restore the alphas of
  the start of that epoch (stop_reason "skip_limit").

Deadline: `time_left()` is asked before every step; the step is not started when
the time left is below STEP_SAFETY x the slowest of the last 10 steps
(training.deadline.StepGuard, seeded with the `step_seconds` hint when given) ->
stop_reason "deadline", the alphas as they are (unless they exceed the skip limit; then
those of the epoch start). Without a hint the first step is started whenever time_left() > 0.
The epochs are the caller's plan (phases/architecture.plan_darts sizes them to the phase).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from automl_pipeline.darts.discretize import derive_genotype, sample_genotype
from automl_pipeline.darts.supernet import SuperNet
from automl_pipeline.search_space.genotype import Genotype
from automl_pipeline.search_space.ops import OPS, TEMPLATE_OPS
from automl_pipeline.training.device import (autocast_context, configure_device, optimizer_kwargs,
                                             use_channels_last)
from automl_pipeline.training.deadline import StepGuard
from automl_pipeline.training.tensors import TensorData, resize_tensor_data
from automl_pipeline.training.trainer import surrogate_beta

FD_EPS = 0.01          # DARTS' finite-difference radius: r = FD_EPS / ||v||
# When a search counts as a result (DartsResult.learned): its supernet beat chance by this factor on
# the val batches of its last epoch, and its alphas moved off uniform (mean normalised entropy).
LEARNED_ACC_OVER_CHANCE = 1.5
MAX_LEARNED_ENTROPY = 0.995


@dataclass(frozen=True)
class DartsConfig:
    epochs: int = 15
    batch_size: int = 64
    n_cells: int = 3
    base_channels: int = 16
    n_nodes: int = 4
    ops: tuple[str, ...] = TEMPLATE_OPS
    w_lr: float = 0.005
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_wd: float = 3e-4
    grad_clip: float = 5.0
    a_lr: float = 0.005
    a_wd: float = 1e-3
    a_betas: tuple[float, float] = (0.5, 0.999)
    second_order: bool = False
    beta0: float = 1.0
    skip_threshold: float = 0.3
    skip_limit: int = 2
    allow_zero: bool = False
    grouping: bool = False            # derive with the thesis' grouping
    max_skips: int | None = None      # derive with at most this many skips in the normal cell
    stem_pool: bool = False           # the supernet's stem pools 2x2 (search_space.network)
    proxy_side: int | None = None     # search on images resized to this side (None: as given)
    seed: int = 0

    def __post_init__(self):
        unknown = [op for op in self.ops if op not in OPS]
        if unknown or len(set(self.ops)) != len(self.ops) or not self.ops:
            raise ValueError(f"bad DARTS ops {self.ops} (unknown: {unknown})")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.n_cells < 1 or self.n_nodes < 1 or self.base_channels < 1:
            raise ValueError(f"bad DARTS sizes in {self}")
        if self.proxy_side is not None and self.proxy_side < 4:
            raise ValueError(f"proxy_side must be >= 4 or None, got {self.proxy_side}")
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "a_betas", tuple(self.a_betas))

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["ops"], d["a_betas"] = list(self.ops), list(self.a_betas)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "DartsConfig":
        """Inverse of to_json (the one parser of a saved DARTS configuration)."""
        d = dict(d)
        d["ops"], d["a_betas"] = tuple(d["ops"]), tuple(d["a_betas"])
        return cls(**d)


@dataclass
class DartsResult:
    genotype: Genotype
    alphas_normal: np.ndarray          # softmaxed, (n_edges, n_ops)
    alphas_reduce: np.ndarray
    epochs_planned: int
    epochs_run: int                    # completed epochs (the one that hit the skip limit included)
    stopped_early: bool
    stop_reason: str                   # "completed" | "skip_limit" | "deadline"
    skip_count_per_epoch: list[int]
    beta_per_epoch: list[float]
    alphas_per_epoch: list[dict]       # [{"normal": [[...]], "reduce": [[...]]}] softmaxed, after each epoch
    seconds: float
    epoch_seconds: list[float]
    ops: tuple[str, ...] = ()
    steps_run: int = 0
    history: list[dict] = field(default_factory=list)   # per epoch: losses, accuracies, lr, beta, skips
    config: DartsConfig | None = None

    @property
    def supernet_val_acc_per_epoch(self) -> list[float]:
        return [float(row["val_acc"]) for row in self.history]

    @property
    def alpha_entropy_per_epoch(self) -> list[float]:
        """Mean entropy of the edges' op weights (normal and reduce cells) after each epoch,
        divided by log(n_ops): 1.0 is uniform, 0.0 one op per edge."""
        return [alpha_entropy(np.asarray(a["normal"]), np.asarray(a["reduce"])) for a in self.alphas_per_epoch]

    def learned(self, n_classes: int) -> tuple[bool, str]:
        """(True, "") when the search produced a result worth using: the supernet's last-epoch
        val accuracy at least LEARNED_ACC_OVER_CHANCE x chance and the alphas moved (entropy at
        most MAX_LEARNED_ENTROPY of uniform); else (False, why)."""
        accs, entropies = self.supernet_val_acc_per_epoch, self.alpha_entropy_per_epoch
        if not accs or not entropies:
            return False, "no search epoch finished"
        chance = 1.0 / max(2, n_classes)
        if accs[-1] < LEARNED_ACC_OVER_CHANCE * chance:
            return False, (f"the supernet did not learn: val accuracy {accs[-1]:.3f} "
                           f"(chance {chance:.3f})")
        if entropies[-1] > MAX_LEARNED_ENTROPY:
            return False, (f"the architecture weights stayed near uniform (entropy {entropies[-1]:.4f} of the "
                           f"uniform value after {self.steps_run} steps)")
        return True, ""

    @classmethod
    def from_report(cls, d: dict) -> "DartsResult":
        """Inverse of report() (the one parser of a saved DARTS result: checkpoints, remote workers)."""
        config = None if d.get("config") is None else DartsConfig.from_json(d["config"])
        return cls(
            genotype=Genotype.from_json(d["genotype"]), alphas_normal=np.asarray(d["alphas_normal"], dtype=np.float64),
            alphas_reduce=np.asarray(d["alphas_reduce"], dtype=np.float64), epochs_planned=int(d["epochs_planned"]),
            epochs_run=int(d["epochs_run"]), stopped_early=bool(d["stopped_early"]), stop_reason=str(d["stop_reason"]),
            skip_count_per_epoch=list(d["skip_count_per_epoch"]), beta_per_epoch=list(d["beta_per_epoch"]),
            alphas_per_epoch=list(d["alphas_per_epoch"]), seconds=float(d["seconds"]),
            epoch_seconds=list(d["epoch_seconds"]), ops=tuple(d["ops"]), steps_run=int(d.get("steps_run", 0)),
            history=list(d.get("history", [])), config=config)

    def report(self) -> dict:
        """The report.json "darts" section."""
        cfg = self.config
        return {
            "arch_steps": self.steps_run,
            "supernet_val_acc_per_epoch": self.supernet_val_acc_per_epoch,
            "supernet_train_acc_per_epoch": [float(row["train_acc"]) for row in self.history],
            "alpha_entropy_per_epoch": self.alpha_entropy_per_epoch,
            "epochs_planned": self.epochs_planned, "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early, "stop_reason": self.stop_reason,
            "skip_count_per_epoch": list(self.skip_count_per_epoch), "beta_per_epoch": list(self.beta_per_epoch),
            "alphas_per_epoch": self.alphas_per_epoch, "genotype": self.genotype.to_json(),
            "seconds": self.seconds, "epoch_seconds": list(self.epoch_seconds), "steps_run": self.steps_run,
            "ops": list(self.ops), "alphas_normal": self.alphas_normal.tolist(),
            "alphas_reduce": self.alphas_reduce.tolist(), "history": self.history,
            "skip_threshold": cfg.skip_threshold if cfg else None, "skip_limit": cfg.skip_limit if cfg else None,
            "config": cfg.to_json() if cfg else None,
        }


def random_cell_result(ops: tuple[str, ...], *, n_nodes: int = 4, seed: int = 0) -> DartsResult:
    """A stand-in for a DARTS result without a search (the "random" DARTS ablation): uniform alphas
    and a genotype sampled from them (`sample_genotype` at temperature 1), so every cell derived from
    it, and every cell BOHB samples from its weights, is a random cell."""
    n_edges = sum(2 + i for i in range(n_nodes))
    uniform = np.full((n_edges, len(ops)), 1.0 / len(ops))
    genotype = sample_genotype(uniform, uniform, tuple(ops), temperature=1.0, seed=seed)
    return DartsResult(genotype=genotype, alphas_normal=uniform, alphas_reduce=uniform.copy(), epochs_planned=0,
                       epochs_run=0, stopped_early=False, stop_reason="random_cell", skip_count_per_epoch=[],
                       beta_per_epoch=[], alphas_per_epoch=[], seconds=0.0, epoch_seconds=[], ops=tuple(ops))


def alpha_entropy(weights_normal: np.ndarray, weights_reduce: np.ndarray) -> float:
    """Mean per-edge entropy of softmaxed alphas over both cells, divided by log(n_ops)."""
    w = np.concatenate([np.asarray(weights_normal), np.asarray(weights_reduce)]).clip(1e-12, 1.0)
    if w.shape[1] < 2:
        return 0.0
    return float((-(w * np.log(w)).sum(axis=1)).mean() / np.log(w.shape[1]))


def cosine_lr(lr_max: float, lr_min: float, epoch: int, epochs: int) -> float:
    """Cosine annealing per epoch (CosineAnnealingLR with T_max=epochs)."""
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * epoch / max(epochs, 1)))


def skip_count(weights_normal: np.ndarray, ops: tuple[str, ...], threshold: float) -> int:
    """Normal-cell edges whose softmaxed skip_connect weight exceeds `threshold`."""
    if "skip_connect" not in ops:
        return 0
    return int((np.asarray(weights_normal)[:, list(ops).index("skip_connect")] > threshold).sum())


class _Search:
    """Supernet, optimisers and batching of one search (internal).

    GPU path: bf16 autocast for the forward passes on CUDA (`amp`; off for second_order,
    whose finite differences need full precision), fused optimizer kernels on CUDA,
    batches drawn by a generator on the data's device, optional channels_last, and no
    host-device sync per step: `step` returns the step's sums as device tensors, the caller
    adds them up and `to_floats` reads them once per epoch (and checks they are finite).
    """

    def __init__(self, train: TensorData, val: TensorData, n_classes: int, config: DartsConfig, loss: nn.Module,
                 init_alphas: tuple[np.ndarray, np.ndarray] | None = None, *, amp: bool = True,
                 channels_last: bool | None = None):
        if train.y is None or val.y is None or len(train) == 0 or len(val) == 0:
            raise ValueError("DARTS needs non-empty labelled train and val sets")
        torch.manual_seed(config.seed)
        if config.proxy_side is not None:
            train, val = resize_tensor_data(train, config.proxy_side), resize_tensor_data(val, config.proxy_side)
        self.config, self.loss, self.train, self.val = config, loss, train, val
        self.device = train.x.device
        configure_device(self.device)
        self.amp = amp and not config.second_order
        self.channels_last = use_channels_last(self.device, channels_last)
        self.model = SuperNet(train.x.shape[1], n_classes, int(train.x.shape[-1]), ops=config.ops,
                              n_cells=config.n_cells, base_channels=config.base_channels,
                              n_nodes=config.n_nodes, stem_pool=config.stem_pool).to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if init_alphas is not None:
            with torch.no_grad():
                for p, a in zip(self.model.arch_parameters(), init_alphas):
                    p.copy_(torch.as_tensor(np.asarray(a), dtype=p.dtype))
        self.arch = self.model.arch_parameters()
        self.weights = self.model.weight_parameters()
        fused = optimizer_kwargs(self.device)
        self.w_opt = torch.optim.SGD(self.weights, lr=config.w_lr, momentum=config.w_momentum,
                                     weight_decay=config.w_wd, **fused)
        self.a_opt = torch.optim.Adam(self.arch, lr=config.a_lr, betas=config.a_betas, weight_decay=config.a_wd,
                                      **fused)
        self.gen = torch.Generator(device=self.device).manual_seed(config.seed)
        self.bs = config.batch_size
        self.fd_eps = FD_EPS
        self.steps_per_epoch = steps_per_epoch(len(train), config)
        self._val_perm, self._val_pos = self._perm(len(val)), 0

    def _perm(self, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.gen, device=self.device)

    def train_batches(self):
        perm = self._perm(len(self.train))
        for s in range(self.steps_per_epoch):
            idx = perm[s * self.bs:(s + 1) * self.bs]
            yield self.train.x[idx], self.train.y[idx]

    def val_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._val_pos >= len(self.val):
            self._val_perm, self._val_pos = self._perm(len(self.val)), 0
        idx = self._val_perm[self._val_pos:self._val_pos + self.bs]
        self._val_pos += self.bs
        return self.val.x[idx], self.val.y[idx]

    def set_epoch(self, lr: float, beta: float) -> None:
        for group in self.w_opt.param_groups:
            group["lr"] = lr
        self.model.set_beta(beta)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, loss); the forward under bf16 autocast on CUDA, the loss in float32.
        Not checked for NaN here (that would sync every step): see `to_floats`/`softmaxed`."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(self.device, self.amp):
            logits = self.model(x)
        return logits, self.loss(logits.float(), y)

    def _grads(self, value: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
        grads = torch.autograd.grad(value, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]

    def _second_order(self, xt, yt, xv, yv) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """DARTS' unrolled alpha gradient: dL_val(w', a)/da - lr * (d2 L_train/da dw) . dL_val(w', a)/dw',
        w' = one virtual SGD step, the Hessian-vector product by central finite differences.
        Weights and BN buffers are restored afterwards."""
        cfg, W, A = self.config, self.weights, self.arch
        lr = self.w_opt.param_groups[0]["lr"]
        w0 = [p.detach().clone() for p in W]
        buffers = [b.detach().clone() for b in self.model.buffers()]
        _, lt = self._loss(xt, yt)
        g = self._grads(lt, W)
        with torch.no_grad():
            for p, gi in zip(W, g):
                step = gi + cfg.w_wd * p
                buf = self.w_opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    step = step + cfg.w_momentum * buf
                p.sub_(lr * step)
        logits, lv = self._loss(xv, yv)
        grads = self._grads(lv, A + W)
        d_alpha, v = grads[:len(A)], grads[len(A):]
        r = self.fd_eps / (torch.sqrt(sum((vi ** 2).sum() for vi in v)) + 1e-12)

        def alpha_grad(sign: float) -> list[torch.Tensor]:
            with torch.no_grad():
                for p, p0, vi in zip(W, w0, v):
                    p.copy_(p0 + sign * r * vi)
            return self._grads(self._loss(xt, yt)[1], A)

        g_plus, g_minus = alpha_grad(1.0), alpha_grad(-1.0)
        with torch.no_grad():
            for p, p0 in zip(W, w0):
                p.copy_(p0)
            for b, b0 in zip(self.model.buffers(), buffers):
                b.copy_(b0)
        return logits, lv, [da - lr * (gp - gm) / (2 * r) for da, gp, gm in zip(d_alpha, g_plus, g_minus)]

    def step(self, xt: torch.Tensor, yt: torch.Tensor) -> dict:
        """Alpha step on the next val batch, then a weight step on (xt, yt)."""
        xv, yv = self.val_batch()
        self.model.train()
        if self.config.second_order:
            logits_v, lv, a_grads = self._second_order(xt, yt, xv, yv)
        else:
            logits_v, lv = self._loss(xv, yv)
            a_grads = self._grads(lv, self.arch)
        for p, g in zip(self.arch, a_grads):
            p.grad = g
        self.a_opt.step()
        self.w_opt.zero_grad(set_to_none=True)
        logits_t, lt = self._loss(xt, yt)
        lt.backward(inputs=self.weights)
        nn.utils.clip_grad_norm_(self.weights, self.config.grad_clip)
        self.w_opt.step()
        with torch.no_grad():
            return {"train_loss": lt.detach() * len(yt), "train_correct": (logits_t.argmax(1) == yt).sum(),
                    "n_train": len(yt), "val_loss": lv.detach() * len(yv),
                    "val_correct": (logits_v.argmax(1) == yv).sum(), "n_val": len(yv)}

    @staticmethod
    def to_floats(totals: dict) -> dict[str, float]:
        """Summed `step` results (device tensors and ints) -> floats, in one device->host copy.
        FloatingPointError when a summed loss is not finite."""
        keys = [k for k, v in totals.items() if torch.is_tensor(v)]
        values = torch.stack([totals[k].float() for k in keys]).cpu().tolist() if keys else []
        out = {k: float(v) for k, v in totals.items() if not torch.is_tensor(v)}
        out.update(zip(keys, values))
        for k in ("train_loss", "val_loss"):
            if k in out and not math.isfinite(out[k]):
                raise FloatingPointError(f"DARTS {k.replace('_', ' ')} is {out[k]}")
        return out

    def softmaxed(self) -> tuple[np.ndarray, np.ndarray]:
        """Softmaxed (normal, reduce) alphas as float64 arrays (one sync); FloatingPointError
        when they are not finite (a NaN loss that went unread reaches the alphas)."""
        with torch.no_grad():
            out = tuple(F.softmax(a.float(), dim=-1).cpu().numpy().astype(np.float64) for a in self.arch)
        if not all(np.isfinite(a).all() for a in out):
            raise FloatingPointError("DARTS alphas became non-finite (NaN loss)")
        return out

    def snapshot(self) -> list[torch.Tensor]:
        return [a.detach().clone() for a in self.arch]

    def restore(self, snap: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for a, s in zip(self.arch, snap):
                a.copy_(s)


def estimate_epoch_seconds(train: TensorData, val: TensorData, n_classes: int, config: DartsConfig,
                           loss: nn.Module, n_batches: int = 3) -> float:
    """Seconds of one search epoch, from timing n_batches steps after one warm-up step
    on a fresh supernet (nothing is kept). Divide by `steps_per_epoch(len(train), config)`
    for the `step_seconds` hint of run_darts."""
    search = _Search(train, val, n_classes, config, loss)
    batches = search.train_batches()
    times = []
    for n in range(n_batches + 1):
        try:
            xt, yt = next(batches)
        except StopIteration:
            batches = search.train_batches()
            xt, yt = next(batches)
        t0 = time.perf_counter()
        search.step(xt, yt)
        if search.device.type == "cuda":
            torch.cuda.synchronize(search.device)
        if n:
            times.append(time.perf_counter() - t0)
    return float(np.mean(times)) * search.steps_per_epoch


def steps_per_epoch(n_train: int, config: DartsConfig) -> int:
    """Search steps per epoch: full batches only (at least one)."""
    return max(1, n_train // config.batch_size)


def run_darts(train: TensorData, val: TensorData, n_classes: int, config: DartsConfig, *,
              time_left: Callable[[], float], loss: nn.Module, on_epoch: Callable[[dict], None] | None = None,
              step_seconds: float | None = None, clock: Callable[[], float] = time.monotonic,
              init_alphas: tuple[np.ndarray, np.ndarray] | None = None,
              on_checkpoint: Callable[[dict], None] | None = None, resume: dict | None = None) -> DartsResult:
    """Search a cell on (train, val) until the planned epochs, the skip limit or the deadline.

    time_left: () -> seconds; asked before every step (see the module docstring).
    loss: module (logits, y) -> scalar, on the data's device.
    on_epoch: called with the epoch's history dict after every completed epoch.
    step_seconds: expected seconds of one step (e.g. from estimate_epoch_seconds), so
        the first step is also deadline-checked.
    clock: monotonic seconds, for the recorded durations and step-time estimates.
    init_alphas: raw (pre-softmax) alphas (normal, reduce) to start from.
    on_checkpoint: called after every completed epoch (after on_epoch) with the search state:
        a dict of tensors and plain Python values only (supernet state_dict with the alphas,
        both optimisers' state_dicts, the batching generator, epoch index, planned epochs,
        per-epoch history), so `torch.save` + `torch.load(weights_only=True)` round-trip it.
    resume: such a dict; the search continues after its last completed epoch with the same
        config (the caller's job to pass the same config and data).
    """
    t_start = clock()
    search = _Search(train, val, n_classes, config, loss, init_alphas)
    ops = config.ops
    guard = StepGuard(time_left, hint=step_seconds)
    planned = config.epochs

    skips, betas, alphas_hist, epoch_secs, history = [], [], [], [], []
    stop_reason, steps, epoch, seconds_before = "completed", 0, 0, 0.0
    if resume is not None:
        search.model.load_state_dict(resume["model"])
        search.w_opt.load_state_dict(resume["w_opt"])
        search.a_opt.load_state_dict(resume["a_opt"])
        search.gen.set_state(resume["generator"])
        search._val_perm, search._val_pos = resume["val_perm"].to(search.device), int(resume["val_pos"])
        epoch, planned, steps = int(resume["epoch"]), resume["planned"], int(resume["steps"])
        stop_reason, seconds_before = str(resume["stop_reason"]), float(resume["seconds"])
        guard = StepGuard(time_left, hint=step_seconds, times=resume["step_times"])
        skips, betas = [int(v) for v in resume["skips"]], [float(v) for v in resume["betas"]]
        alphas_hist, epoch_secs = list(resume["alphas_per_epoch"]), [float(v) for v in resume["epoch_seconds"]]
        history = [dict(row) for row in resume["history"]]

    def state() -> dict:
        return {"model": {k: v.detach().cpu().clone() for k, v in search.model.state_dict().items()},
                "w_opt": search.w_opt.state_dict(), "a_opt": search.a_opt.state_dict(),
                "generator": search.gen.get_state(), "val_perm": search._val_perm.detach().cpu().clone(),
                "val_pos": int(search._val_pos), "epoch": epoch, "planned": planned, "steps": steps,
                "stop_reason": stop_reason, "seconds": seconds_before + clock() - t_start,
                "step_times": guard.times, "skips": list(skips), "betas": list(betas),
                "alphas_per_epoch": list(alphas_hist), "epoch_seconds": list(epoch_secs),
                "history": [dict(row) for row in history]}

    while stop_reason == "completed" and epoch < planned:
        beta = surrogate_beta(config.beta0, epoch, max(planned - 1, 1))
        lr = cosine_lr(config.w_lr, config.w_lr_min, epoch, planned)
        search.set_epoch(lr, beta)
        snap, t_epoch = search.snapshot(), clock()
        totals = dict.fromkeys(("train_loss", "train_correct", "n_train", "val_loss", "val_correct", "n_val"), 0.0)
        for xt, yt in search.train_batches():
            if not guard.allows():
                stop_reason = "deadline"
                break
            t0 = clock()
            for k, v in search.step(xt, yt).items():
                totals[k] += v
            guard.record(clock() - t0)
            steps += 1
        if stop_reason == "deadline":
            if skip_count(search.softmaxed()[0], ops, config.skip_threshold) > config.skip_limit:
                search.restore(snap)
            break
        w_normal, w_reduce = search.softmaxed()
        totals = search.to_floats(totals)           # the epoch's one read of the step sums
        count = skip_count(w_normal, ops, config.skip_threshold)
        epoch_secs.append(clock() - t_epoch)
        skips.append(count)
        betas.append(beta)
        alphas_hist.append({"normal": w_normal.tolist(), "reduce": w_reduce.tolist()})
        record = {"epoch": epoch + 1, "lr": lr, "beta": beta, "skip_count": count, "seconds": epoch_secs[-1],
                  "train_loss": totals["train_loss"] / totals["n_train"],
                  "train_acc": totals["train_correct"] / totals["n_train"],
                  "val_loss": totals["val_loss"] / totals["n_val"],
                  "val_acc": totals["val_correct"] / totals["n_val"]}
        history.append(record)
        if on_epoch is not None:
            on_epoch(dict(record))
        epoch += 1
        if count > config.skip_limit:
            search.restore(snap)
            stop_reason = "skip_limit"
        if on_checkpoint is not None:
            on_checkpoint(state())
    w_normal, w_reduce = search.softmaxed()
    genotype = derive_genotype(w_normal, w_reduce, ops, allow_zero=config.allow_zero, grouping=config.grouping,
                               max_skips=config.max_skips)
    return DartsResult(
        genotype=genotype, alphas_normal=w_normal, alphas_reduce=w_reduce,
        epochs_planned=int(planned), epochs_run=epoch,
        stopped_early=stop_reason != "completed", stop_reason=stop_reason, skip_count_per_epoch=skips,
        beta_per_epoch=betas, alphas_per_epoch=alphas_hist, seconds=seconds_before + clock() - t_start,
        epoch_seconds=epoch_secs, ops=ops, steps_run=steps, history=history, config=config)
