"""The last step of the final fit: a greedy ensemble of every candidate the run trained (the logistic
regression, the first network, BOHB's kept top-rung trials, the final fit's rounds), with post-hoc logit
adjustment on imbalanced data, delivered when its validation macro-F1 beats the best single model's.

The rule is the issue's, chosen over a stricter one by benchmark: a gate that asked the ensemble procedure to
win on validation halves it was not fitted on passed over 15 ensembles in 60-300 s runs (RESULTS.md "The
ensemble's delivery rule"); 11 of them beat the delivered single model on the held-out test (mean +0.024
macro-F1), as did 25 of the 29 it let through: on a few hundred validation images the halves rank noise.
Greedy selection only adds a model or a tau that raises validation macro-F1, so in practice an ensemble
that mixes anything is delivered.

Writes the report's `ensemble` section; `RunReport` adds the held-out scores of the delivered model and
of the runner-up (best single model or the ensemble passed over) side by side.
"""
from __future__ import annotations

import numpy as np

from automl_pipeline import ensemble
from automl_pipeline.delivery import Candidate
from automl_pipeline.phases.common import RunData
from automl_pipeline.phases.context import RunContext, phase_failed
from automl_pipeline.training.metrics import macro_f1

NAME = "ensemble"
# At most this many candidates (the best by validation macro-F1) enter the selection.
MAX_LIBRARY = 12


def build_ensemble(pool: list[Candidate], data: RunData) -> tuple[Candidate | None, Candidate, dict]:
    """(the ensemble as a candidate, None when it would be one of the candidates itself; the best single
    model; the report section, whose `delivered` says whether the ensemble pays)."""
    library = sorted(pool, key=lambda c: -c.val_macro_f1)[:MAX_LIBRARY]
    labels = data.val.y.cpu().numpy()
    prior = data.train_counts / max(1, data.train_counts.sum())
    adjust = ensemble.should_adjust(data.train_counts)
    val_probs = [c.val_probs for c in library]
    single = library[ensemble.best_single(val_probs, labels, data.n_classes)]
    section = {"status": "completed", "n_candidates": len(library), "logit_adjustment_tried": adjust,
               "library": [{"name": c.name, "val_macro_f1": round(c.val_macro_f1, 4)} for c in library]}
    if len(library) < 2:
        section.update(status="skipped", reason=f"{len(library)} candidate(s) with probabilities: nothing to mix",
                       delivered=False)
        return None, single, section
    chosen = ensemble.select(val_probs, labels, data.n_classes, prior, adjust=adjust)
    mixed_val = ensemble.combine(val_probs, chosen, prior)
    val_f1 = macro_f1(labels, mixed_val.argmax(axis=1), data.n_classes)
    members = [{"name": library[i].name, "source": library[i].source, "weight": round(chosen.weights[i], 4),
                "val_macro_f1": round(library[i].val_macro_f1, 4)} for i in chosen.members]
    one_model = len(members) == 1 and chosen.tau == 0
    pays = not one_model and val_f1 > single.val_macro_f1
    section.update(members=members, tau=chosen.tau, val_macro_f1=round(val_f1, 4),
                   best_single_val_macro_f1=round(single.val_macro_f1, 4), delivered=pays)
    if one_model:
        section["reason"] = f"the selection kept one model ({members[0]['name']}) without logit adjustment"
        return None, single, section
    if not pays:
        section["reason"] = (f"its validation macro-F1 {val_f1:.3f} does not beat the best single model's "
                             f"({single.name}, {single.val_macro_f1:.3f})")
    return _as_candidate(library, chosen, prior, mixed_val, val_f1, members), single, section


def _as_candidate(library: list[Candidate], chosen: ensemble.Ensemble, prior: np.ndarray, val_probs: np.ndarray,
                  val_f1: float, members: list[dict]) -> Candidate:
    """The ensemble as one candidate (mixture_candidate of its picked members, with tau and the class prior)."""
    picked = [library[i] for i in chosen.members]
    weights = [chosen.weights[i] for i in chosen.members]
    return mixture_candidate(picked, ensemble.Ensemble(tuple(weights), chosen.tau), prior, kind="ensemble",
                             source="ensemble", description=f"ensemble of {len(picked)} models",
                             val_probs=val_probs, val_f1=val_f1, config={"tau": chosen.tau}, members=members,
                             architecture={"tau": chosen.tau, "prior": [float(p) for p in prior]})


def mixture_candidate(picked: list[Candidate], mixture: ensemble.Ensemble, prior: np.ndarray | None, *, kind: str,
                      source: str, description: str, val_probs: np.ndarray, val_f1: float, config: dict | None,
                      members: list[dict] | None = None, architecture: dict | None = None) -> Candidate:
    """Models mixed by `mixture` (weights, tau) as one candidate: their mixed probabilities on the held-out test
    and predicted images (`val_probs` is the caller's: mixed, or out-of-fold for a bag), and a model.pt
    holding every member's weights (keys "member<i>.<key>") with {"kind": kind, **architecture, "members":
    [{weight, architecture, config}]}. The final ensemble and the k-fold bag (equal weights) are both this."""
    def mix(field: str) -> np.ndarray:
        return ensemble.combine([getattr(c, field) for c in picked], mixture, prior).astype(np.float32)

    test_probs, predict_probs = mix("test_probs"), mix("predict_probs")
    state = {f"member{i}.{key}": value for i, c in enumerate(picked) for key, value in (c.state_dict or {}).items()}
    described = {"kind": kind, **(architecture or {}),
                 "members": [{"weight": w, "architecture": c.architecture, "config": c.config}
                             for w, c in zip(mixture.weights, picked)]}
    return Candidate(source=source, description=description, val_macro_f1=val_f1,
                     predict_labels=predict_probs.argmax(axis=1).astype(np.int64),
                     test_predictions=test_probs.argmax(axis=1).astype(np.int64),
                     val_probs=np.asarray(val_probs, dtype=np.float32), test_probs=test_probs,
                     predict_probs=predict_probs, architecture=described, config=config, state_dict=state,
                     members=members, epochs=max(c.epochs for c in picked), train_s=sum(c.train_s for c in picked),
                     train_images_per_s=float(np.mean([c.train_images_per_s for c in picked])))


def run(ctx: RunContext) -> None:
    """Select, report and (when it pays) deliver the ensemble; the runner-up (the best single model, or the
    ensemble passed over) is kept for the report's side-by-side held-out scores."""
    pool = ctx.delivery.pool       # the candidates offered with probabilities (Delivery.offer)
    if not pool:
        ctx.report[NAME] = {"status": "skipped", "reason": "no candidate with stored probabilities", "delivered": False}
        return
    try:
        candidate, single, section = build_ensemble(pool, ctx.data)
    except Exception as err:   # noqa: BLE001 - a failed ensemble must not end the run
        ctx.report[NAME] = {"status": "failed", "reason": phase_failed(ctx.log, NAME, err), "delivered": False}
        return
    ctx.report[NAME] = section
    if not section["delivered"]:
        ctx.log(f"ensemble not delivered: {section['reason']}")
        ctx.delivery.runner_up = candidate
        return
    ctx.log(f"ensemble of {len(section['members'])} (tau {section['tau']}): val macro-F1 {section['val_macro_f1']:.4f} "
            f"vs best single {section['best_single_val_macro_f1']:.4f}")
    ctx.deliver(candidate)
    ctx.delivery.runner_up = single
