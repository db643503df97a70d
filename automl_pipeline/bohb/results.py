"""What the BOHB phase produces: one TrialRecord per finished trial, the incumbent rule, and
BohbResult (the report.json "bohb" section).

Incumbent rule (documented in the report as `incumbent_rule`): among trials
that finished without error and were evaluated, prefer the ones that ran their
full budget (not cut by the deadline); among those, take the largest budget
that has any, and the best validation macro-F1 there (ties: the earlier
trial). This is hpbandster's own "largest budget" rule, made robust to a trial
at the top budget that the deadline cut after a few epochs. Cut trials count
only when no trial completed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from hpbandster.core.result import Result

from automl_pipeline.bohb.budgets import hpbandster_budgets
from submission import to_jsonable
from automl_pipeline.bohb.worker import TRIAL_ERROR_CHARS, n_epochs
from automl_pipeline.errors import WorkerError, error_text

INCUMBENT_RULE = ("best val macro-F1 at the largest budget among trials that ran their full budget without error "
                  "(deadline-cut trials only when none completed); ties: earlier trial")


@dataclass
class TrialRecord:
    """One finished (or failed) trial as the phase saw it."""

    config_id: tuple
    config: dict
    budget: float
    loss: float
    val_macro_f1: float
    evaluated: bool
    error: str | None
    epochs_done: int
    stopped_by_deadline: bool
    seconds: float
    worker: str | None
    t_s: float                      # finish time, seconds since run_bohb started the search (not process start)
    model_based_pick: bool | None

    @classmethod
    def from_hpbandster(cls, config_id, config: dict, budget: float, result: dict | None, exception: str | None, *,
                        config_info: dict | None = None, worker: str | None = None,
                        t_s: float) -> "TrialRecord":
        """A record from what hpbandster logs for one finished job: a results.json line
        [config_id, budget, timestamps, result, exception] plus the config and config_info of its
        configs.json line. Used for live jobs (TrialLog) and for trials read back from disk (resume).

        config: the sampled configuration; the values fixed for the trial (the worker's info["fixed"])
        complete it, so a record's config is what the trial trained, live or read back.
        result: the worker's {"loss", "info"} dict, or None when the worker raised (then `exception`
        holds its traceback and the record carries a "WorkerError: <last line>" error).
        worker: used when the result's info names no worker. Never raises on a malformed result:
        a missing or non-finite loss becomes 1.0, missing info fields their defaults.
        """
        result = result if isinstance(result, dict) else None
        info = dict(result.get("info") or {}) if result is not None else {}
        if result is None:
            error = error_text(WorkerError.from_traceback(exception), TRIAL_ERROR_CHARS)
        else:
            error = info.get("error")
        loss = result.get("loss") if result is not None else None
        loss = float(loss) if isinstance(loss, (int, float)) and math.isfinite(loss) else 1.0
        fixed = info.get("fixed") if isinstance(info.get("fixed"), dict) else {}
        return cls(config_id=tuple(config_id), config=to_jsonable({**config, **fixed}), budget=float(budget), loss=loss,
                   val_macro_f1=float(info.get("val_macro_f1") or 0.0),
                   evaluated=bool(info.get("evaluated", False)) and error is None, error=error,
                   epochs_done=int(info.get("epochs_done") or 0),
                   stopped_by_deadline=bool(info.get("stopped_by_deadline", False)),
                   seconds=float(info.get("seconds") or 0.0), worker=info.get("worker") or worker,
                   t_s=float(t_s), model_based_pick=(config_info or {}).get("model_based_pick"))

    def to_json(self) -> dict:
        return to_jsonable({"config_id": list(self.config_id), "config": self.config, "budget": self.budget,
                         "loss": self.loss, "val_macro_f1": self.val_macro_f1, "evaluated": self.evaluated,
                         "error": self.error, "epochs_done": self.epochs_done,
                         "stopped_by_deadline": self.stopped_by_deadline, "seconds": round(self.seconds, 3),
                         "worker": self.worker, "t_s": round(self.t_s, 3),
                         "model_based_pick": self.model_based_pick})


def top_rung(trials: list[TrialRecord], n: int) -> list[TrialRecord]:
    """The incumbent under INCUMBENT_RULE (see module docstring) and, after it, the next best trials of its
    pool at its budget: at most `n`, best first (ties: the earlier trial); empty when no trial qualifies."""
    ok = [t for t in trials if t.evaluated and t.error is None]
    complete = [t for t in ok if not t.stopped_by_deadline]
    pool = complete or ok
    if not pool:
        return []
    top = max(t.budget for t in pool)
    return sorted((t for t in pool if t.budget == top), key=lambda t: (-t.val_macro_f1, t.t_s))[:n]


def select_incumbent(trials: list[TrialRecord]) -> TrialRecord | None:
    """The incumbent under INCUMBENT_RULE; None when no trial qualifies."""
    best = top_rung(trials, 1)
    return best[0] if best else None


# Below this Spearman correlation between adjacent rungs the lower rung ranks noise (hpbandster's notes).
RANK_CORRELATION_FLOOR = 0.3
# A rung is passed over (BOHB's brackets stop starting there) only once its correlation with the next rung
# is measured over at least this many configurations. Spearman over n configurations of unrelated scores has a
# standard deviation of about 1 / sqrt(n - 1): 0.38 at 8, so a single low reading is still weak evidence; a
# mistaken raise costs longer trials for the rest of the search, not a wrong model.
RUNG_EVIDENCE_CONFIGS = 8


def rank_correlations(scores: dict[float, dict], budgets: list[float]) -> list[dict]:
    """Per pair of adjacent budgets: the Spearman rank correlation of the scores (budget -> {config id: score})
    over the configurations scored on both (None with fewer than 3 such, or when one rung's scores are all equal)."""
    from scipy.stats import spearmanr

    rows = []
    for low, high in zip(budgets, budgets[1:]):
        lower, upper = scores.get(low, {}), scores.get(high, {})
        shared = sorted(set(lower) & set(upper))
        rho = None
        if len(shared) >= 3 and len({lower[c] for c in shared}) > 1 and len({upper[c] for c in shared}) > 1:
            rho = float(spearmanr([lower[c] for c in shared], [upper[c] for c in shared]).statistic)
        rows.append({"budgets": [low, high], "n_configs": len(shared), "spearman": None if rho is None else round(rho, 3)})
    return rows


def rung_rank_correlations(trials: list[TrialRecord], budgets: list[float]) -> list[dict]:
    """`rank_correlations` of the evaluated trials' validation macro-F1."""
    scores: dict[float, dict[tuple, float]] = {}
    for t in trials:
        if t.evaluated:
            scores.setdefault(t.budget, {})[t.config_id] = t.val_macro_f1
    return rank_correlations(scores, budgets)


def first_ranking_rung(rows: list[dict]) -> int:
    """The index of the lowest budget whose rung is not shown to rank noise: from the bottom, a rung is passed
    over while its correlation with the next (`rank_correlations` rows) is below RANK_CORRELATION_FLOOR over at
    least RUNG_EVIDENCE_CONFIGS configurations. Never past the top budget."""
    rung = 0
    for row in rows:
        if row["spearman"] is None or row["n_configs"] < RUNG_EVIDENCE_CONFIGS or \
                row["spearman"] >= RANK_CORRELATION_FLOOR:
            break
        rung += 1
    return rung


@dataclass
class BohbResult:
    """What the BOHB phase found. `incumbent_config` is None when no trial was evaluated."""

    incumbent_config: dict | None
    incumbent_val_macro_f1: float
    incumbent_budget: float
    min_budget: float
    max_budget: float
    eta: float
    trials: list[TrialRecord]
    configs_sampled: int
    model_based_picks: int
    model_min_trials: int            # finished trials one budget needs before BOHB's KDE can be built
    trajectory: list[tuple[float, float]]
    seconds: float
    n_workers: int
    clean_shutdown: bool
    epoch_seconds: float | None = None
    master_error: str | None = None
    optimizer: str = "bohb"          # "bohb", or "random" (same brackets, configurations sampled at random)
    cell_choice: str | None = None   # how the space chose cells (phases/hyperparameters.py CELL_LEVELS)
    # each raise of the budget brackets start from (master.DeadlineBOHB.raised_min_budget): iteration,
    # from_budget, to_budget, evidence (the rank_correlations rows of the rungs passed over)
    raised_min_budget: list[dict] = field(default_factory=list)
    hpbandster_result: Result | None = field(default=None, repr=False)

    @property
    def budgets(self) -> list[float]:
        return hpbandster_budgets(self.min_budget, self.max_budget, self.eta)

    def warning(self) -> str | None:
        if self.optimizer == "bohb" and self.configs_sampled and self.model_based_picks == 0:
            return (f"BOHB was effectively random search: 0 of {self.configs_sampled} configurations were "
                    f"model-based picks (its KDE needs {self.model_min_trials} finished trials on one budget)")
        return None

    def rank_warning(self) -> str | None:
        """A rung whose ranking disagrees with the next one (Spearman below RANK_CORRELATION_FLOOR), or None."""
        low = [row for row in rung_rank_correlations(self.trials, self.budgets)
               if row["spearman"] is not None and row["spearman"] < RANK_CORRELATION_FLOOR]
        if not low:
            return None
        row = low[0]
        raised_to = self.raised_min_budget[-1]["to_budget"] if self.raised_min_budget else None
        advice = (f"later brackets started at {raised_to:g} epochs" if raised_to is not None
                  and row["budgets"][0] < raised_to else "raise min_budget or lower eta")
        return (f"the rung of {row['budgets'][0]:g} epochs ranks noise: Spearman {row['spearman']:.2f} with the "
                f"{row['budgets'][1]:g}-epoch rung over {row['n_configs']} configurations "
                f"(below {RANK_CORRELATION_FLOOR}: {advice})")

    def raise_sentence(self) -> str | None:
        """One sentence on the last raise of the budget brackets start from, or None."""
        if not self.raised_min_budget:
            return None
        last = self.raised_min_budget[-1]
        row = last["evidence"][-1]
        return (f"from iteration {last['iteration']} on, brackets started at {last['to_budget']:g} epochs, not "
                f"{self.min_budget:g}: the {row['budgets'][0]:g}-epoch rung ranked noise (Spearman "
                f"{row['spearman']:.2f} with the {row['budgets'][1]:g}-epoch rung over {row['n_configs']} configurations)")

    def report(self) -> dict:
        """The report.json "bohb" section."""
        per_budget: dict[str, int] = {}
        picks_per_budget: dict[str, int] = {}      # model-based configurations by the budget they started on
        started: set[tuple] = set()
        workers: dict[str, int] = {}
        for t in self.trials:
            key = f"{t.budget:g}"
            per_budget[key] = per_budget.get(key, 0) + 1
            if t.config_id not in started:
                started.add(t.config_id)
                picks_per_budget[key] = picks_per_budget.get(key, 0) + int(bool(t.model_based_pick))
            if t.worker:
                workers[t.worker] = workers.get(t.worker, 0) + 1
        errors = sorted({t.error for t in self.trials if t.error})
        incumbent = None
        if self.incumbent_config is not None:
            incumbent = {"config": self.incumbent_config, "val_macro_f1": self.incumbent_val_macro_f1,
                         "budget": self.incumbent_budget, "epochs": n_epochs(self.incumbent_budget)}
        return to_jsonable({
            "optimizer": self.optimizer,
            "cell_choice": self.cell_choice,
            "n_trials": len(self.trials),
            "trials_per_budget": per_budget,
            "min_budget": self.min_budget, "max_budget": self.max_budget, "eta": self.eta,
            "budgets": self.budgets, "epochs_per_budget": [n_epochs(b) for b in self.budgets],
            "epoch_seconds": self.epoch_seconds,
            "failed_trials": sum(1 for t in self.trials if t.error),
            "errors": errors[:10],
            "deadline_cut_trials": sum(1 for t in self.trials if t.stopped_by_deadline),
            "configs_sampled": self.configs_sampled,
            "model_based_picks": self.model_based_picks,
            "model_based_picks_per_budget": picks_per_budget,
            "model_min_trials": self.model_min_trials,
            "rung_rank_correlation": rung_rank_correlations(self.trials, self.budgets),
            "rank_warning": self.rank_warning(),
            "raised_min_budget": self.raised_min_budget,
            "raised_min_budget_reason": self.raise_sentence(),
            "n_hyperparameters": self.model_min_trials // 2 - 1,
            "warning": self.warning(),
            "incumbent": incumbent,
            "incumbent_rule": INCUMBENT_RULE,
            "trajectory": [[round(t, 3), f1] for t, f1 in self.trajectory],
            "seconds": round(self.seconds, 3),
            "n_workers": self.n_workers,
            "trials_per_worker": workers,
            "clean_shutdown": self.clean_shutdown,
            "master_error": self.master_error,
        })
