"""k-fold bagging of the final choice (AutoGluon's bagging): the training and validation images are pooled
and cut into k stratified folds; fold model j trains on the other k - 1 folds and is validated (its best
epoch chosen) on fold j; the bag averages the k models' probabilities. Its out-of-fold predictions score
every pooled image, not only the ~100 of the validation split, and on the validation images they are
predictions of models that never trained on them, so the bag competes with single models (and enters the
ensemble) on the same validation images. A fold model's best epoch is chosen on its own fold (AutoGluon's
early stopping does the same): that flatters the out-of-fold score a little, as a single model's best
epoch flatters its validation score. The held-out test split is never part of any fold.

Rounds after the first (long budgets: fold models are capped at MAX_EPOCHS) buy evidence. While contenders
are left (BOHB's next-best top-rung configurations, phases/final_fit.py) and the time holds one's fold models
at the first bag's epochs, the round bags the next contender on the same partition: each bag is then scored
by out-of-fold macro-F1 over every pooled image, so the top rung is ranked on ~10x the validation split's
images (phases/evidence.py takes the best). Otherwise the round repeats the best bag so far on a new
partition (repeated bagging) when the time holds fold models of FINAL_EPOCHS.

When to bag is the plan's call (budget.plan.bag_folds); this module only trains, combines and ranks.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from automl_pipeline.delivery import Candidate
from automl_pipeline.ensemble import Ensemble
from automl_pipeline.phases import ensemble
from automl_pipeline.phases.common import RunData, TimeLeft, train_candidate
from automl_pipeline.search_space import NetworkSpec
from automl_pipeline.training import TensorData, TrainConfig
from automl_pipeline.training.metrics import macro_f1
from automl_pipeline.training.planning import MAX_EPOCHS, epochs_that_fit
from budget.plan import bag_seconds_needed

KIND = "bag"     # model.pt / report.json final.architecture.kind of a bag
# Rounds at most, contenders' bags and repeats together (AutoGluon repeats up to 20).
MAX_ROUNDS = 3


@dataclass(frozen=True)
class BagPlan:
    """What one bag trains: the report's source name, the words for logs, the network, epochs -> its
    TrainConfig, and fold_epoch_s, seconds of one epoch on k - 1 folds (budget.plan.fold_epoch_seconds)."""

    source: str
    description: str
    spec: NetworkSpec
    config_for: Callable[[int], TrainConfig]
    fold_epoch_s: float


@dataclass
class _Bag:
    plan: BagPlan
    n_images: int
    n_classes: int
    members: list[Candidate] = field(default_factory=list)
    rounds: int = 0
    fold_epochs: int = 0           # the longest fold model of its first round
    oof_sum: np.ndarray | None = None

    def add(self, members: list[Candidate], oof: np.ndarray, epochs: int) -> None:
        self.members += members
        self.oof_sum = oof.astype(np.float64) if self.oof_sum is None else self.oof_sum + oof
        self.rounds += 1
        self.fold_epochs = self.fold_epochs or epochs

    def oof_probs(self) -> np.ndarray:
        return (self.oof_sum / self.rounds).astype(np.float32)

    def oof_macro_f1(self, labels: np.ndarray) -> float:
        return macro_f1(labels, self.oof_probs().argmax(axis=1), self.n_classes)


def fold_holdouts(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """The held-out indices of each of `folds` stratified folds of `labels` (sorted; together all indices once)."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [np.sort(held) for _, held in splitter.split(np.zeros(len(labels)), labels)]


def _subset(data: TensorData, index: np.ndarray) -> TensorData:
    where = torch.as_tensor(index, device=data.x.device)
    return TensorData(x=data.x[where], y=data.y[where])


def fit_bags(first: BagPlan, data: RunData, time_left: TimeLeft, *, folds: int, seed: int,
             log: Callable[[str], None], contenders: Sequence[Callable[[], BagPlan]] = (),
             max_rounds: int = MAX_ROUNDS) -> tuple[list[Candidate], dict]:
    """Bag `first` with `folds` fold models, each in an equal share of what is left when it starts (capped
    at MAX_EPOCHS); then up to `max_rounds` rounds in all, each a contender's bag or a repeat (module
    docstring). contenders: each builds its BagPlan (timing an epoch of its network) when its round may come.

    Returns (the bags as candidates, first's first; none when a fold model of first's first round trained
    no epoch) and the report's `bagging` facts: rounds of the best bag (`repeats`), its out-of-fold macro-F1
    over all pooled images and on the validation images, `best` (its name), `bags` (one row per bag),
    `rounds_note` (why the rounds after the first went where they did), each fold model's epochs and score.
    """
    pooled = TensorData(x=torch.cat([data.train.x, data.val.x]), y=torch.cat([data.train.y, data.val.y]))
    labels = pooled.y.cpu().numpy()
    facts: dict = {"folds": folds, "repeats": 0, "fold_models": []}
    bags = [_Bag(first, len(labels), data.n_classes)]
    waiting, notes = list(contenders), []
    bag = bags[0]
    for round_index in range(max_rounds):
        if round_index > 0:
            try:
                bag = _next_round(bags, waiting, labels, time_left, folds=folds, notes=notes)
            except Exception as err:   # noqa: BLE001 - a contender that cannot be built leaves the bags trained
                notes.append(f"round {round_index + 1} not started: {type(err).__name__}: {err}")
                break
            if bag is None:
                break
            if bag not in bags:
                bags.append(bag)
        index = bags.index(bag) + 1
        label = "".join([f"bag {index}, " if len(bags) > 1 else "", f"round {bag.rounds + 1}, " if bag.rounds else ""])
        try:
            members, oof, epochs, seconds_per_epoch = _one_round(
                bag.plan, data, pooled, labels, time_left, folds=folds, seed=seed + bag.rounds,
                cap=MAX_EPOCHS if bag is bags[0] else bags[0].fold_epochs, label=label, bag_index=index,
                rows=facts["fold_models"], log=log)
        except Exception as err:   # noqa: BLE001 - a later round's failure keeps the bags already trained
            if round_index == 0:
                raise
            notes.append(f"{label}failed: {type(err).__name__}: {err}")
            if bag.rounds == 0:
                bags.remove(bag)
            break
        if oof is None:
            facts["reason"] = f"a fold model of {label or 'the first round, '}trained no epoch in its share of the time"
            if round_index == 0:
                return [], facts
            if bag.rounds == 0:
                bags.remove(bag)
            break
        bag.add(members, oof, epochs)
        bag.plan = dataclasses.replace(bag.plan, fold_epoch_s=seconds_per_epoch)
    facts["rounds_note"] = "; ".join(notes) or "one round"
    candidates = [_bag_candidate(b, folds, labels, len(data.train)) for b in bags]
    best = max(range(len(bags)), key=lambda i: (candidates[i].oof_macro_f1, -i))
    facts.update(repeats=bags[best].rounds, best=candidates[best].name,
                 oof_macro_f1=round(candidates[best].oof_macro_f1, 4),
                 val_macro_f1=round(candidates[best].val_macro_f1, 4),
                 bags=[{"name": c.name, "source": c.source, "rounds": b.rounds, "fold_epochs": b.fold_epochs,
                        "oof_macro_f1": round(c.oof_macro_f1, 4), "val_macro_f1": round(c.val_macro_f1, 4)}
                       for b, c in zip(bags, candidates)])
    return candidates, facts


def _next_round(bags: list[_Bag], waiting: list[Callable[[], BagPlan]], labels: np.ndarray, time_left: TimeLeft,
                *, folds: int, notes: list[str]) -> _Bag | None:
    """The bag the next round trains: the next contender's new bag when the time holds its fold models at
    the first bag's epochs, else a repeat of the best bag so far (out-of-fold) when it holds fold models of
    FINAL_EPOCHS, else None. Says why in `notes`."""
    epochs = bags[0].fold_epochs
    while waiting:
        plan = waiting.pop(0)()
        need, left = folds * epochs * plan.fold_epoch_s, time_left()
        if left >= need:
            notes.append(f"{plan.description}: its own bag at {epochs} epochs per fold model, on the same folds")
            return _Bag(plan, len(labels), bags[0].n_classes)
        notes.append(f"no time for {plan.description}: {folds} fold models of {epochs} epochs need {need:.0f}s, "
                     f"{left:.0f}s left")
        waiting.clear()
    best = max(bags, key=lambda b: b.oof_macro_f1(labels))
    if time_left() < bag_seconds_needed(best.plan.fold_epoch_s, folds):
        return None
    notes.append(f"a repeat of {best.plan.description} on a new partition")
    return best


def _one_round(plan: BagPlan, data: RunData, pooled: TensorData, labels: np.ndarray, time_left: TimeLeft, *,
               folds: int, seed: int, cap: int, label: str, bag_index: int, rows: list, log
               ) -> tuple[list[Candidate], np.ndarray | None, int, float]:
    """One partition's fold models of `plan`, at most `cap` epochs each: (them, their out-of-fold probabilities
    or None when one trained no epoch, the most epochs a fold model trained, the measured seconds per epoch);
    appends one report row per fold model to `rows`."""
    oof = np.zeros((len(labels), data.n_classes), dtype=np.float32)
    members, seconds, epochs_done, longest = [], 0.0, 0, 0
    fold_epoch_s = plan.fold_epoch_s
    for j, held in enumerate(fold_holdouts(labels, folds, seed)):
        slot_end = time.monotonic() + time_left() / (folds - j)

        def fold_left() -> float:
            return max(0.0, min(time_left(), slot_end - time.monotonic()))

        fit = np.setdiff1d(np.arange(len(labels)), held)
        fold_data = dataclasses.replace(data, train=_subset(pooled, fit), val=_subset(pooled, held),
                                        train_counts=np.bincount(labels[fit], minlength=data.n_classes))
        epochs = epochs_that_fit(fold_left(), fold_epoch_s, high=cap)
        name = f"{plan.description}, {label}fold {j + 1}/{folds}"
        log(f"{name}: ~{fold_epoch_s:.2f}s/epoch, {epochs} epochs planned")
        candidate, result = train_candidate(plan.source, plan.spec, plan.config_for(epochs), fold_data, fold_left,
                                            log=log, description=name)
        rows.append({"bag": bag_index, "seed": seed, "fold": j + 1, "epochs": result.epochs_done,
                     "n_train": int(fit.size), "n_held": int(held.size),
                     "held_macro_f1": round(candidate.val_macro_f1, 4)})
        if result.epochs_done == 0:
            return members, None, longest, fold_epoch_s
        oof[held] = candidate.val_probs
        members.append(candidate)
        seconds, epochs_done = seconds + result.seconds, epochs_done + result.epochs_done
        longest = max(longest, result.epochs_done)
    return members, oof, longest, seconds / max(1, epochs_done)


def _bag_candidate(bag: _Bag, folds: int, labels: np.ndarray, n_train: int) -> Candidate:
    """The bag as one candidate: an equal-weight mixture of its fold models, out-of-fold probabilities on
    validation and over every pooled image (`oof_macro_f1`), one architecture and config per member in
    model.pt (kind KIND)."""
    oof = bag.oof_probs()
    val_probs = oof[n_train:]
    val_f1 = macro_f1(labels[n_train:], val_probs.argmax(axis=1), bag.n_classes)
    rounds = f" x {bag.rounds}" if bag.rounds > 1 else ""
    weights = tuple(1.0 / len(bag.members) for _ in bag.members)
    candidate = ensemble.mixture_candidate(
        bag.members, Ensemble(weights, 0.0), None, kind=KIND, source=bag.plan.source,
        description=f"{folds}-fold{rounds} bag of the {bag.plan.description}", val_probs=val_probs, val_f1=val_f1,
        config=bag.members[0].config, architecture={"models": len(bag.members)})
    return dataclasses.replace(candidate, oof_macro_f1=bag.oof_macro_f1(labels))
