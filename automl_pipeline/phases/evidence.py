"""The step that closes the final fit, after the ensemble: a model chosen on the validation split stays
delivered over the k-fold bag only when it beats the bag by more than the validation images' noise.

The bag (phases/bagging.py; of several, the best out-of-fold) is the one candidate with evidence beyond the validation split: its
out-of-fold predictions score every pooled image. Every other choice (the best single model, the
ensemble's weights) rests on the validation split alone, and on RetinaMNIST-sized data (120 validation
images, 9 in the rarest class) that split does not rank candidates lying within a few hundredths of
macro-F1 of each other (benchmarks/RESULTS.md: the Spearman correlation between candidates' validation and
held-out scores ranged from -0.43 to 0.43 over ours' four mission runs). So the delivered model keeps its
place only when its validation predictions beat the bag's out-of-fold ones in at least CONFIDENCE of
paired bootstrap resamples of the validation images; otherwise the bag is delivered. (An ensemble's
validation score is in-sample, fitted on those very images: the bootstrap cannot remove that optimism,
which is one more reason to ask for a high CONFIDENCE.)

Writes the report's `evidence` section: what was compared, the win rate, what was delivered and why.
"""
from __future__ import annotations

from automl_pipeline.delivery import Candidate
from automl_pipeline.phases import bagging
from automl_pipeline.phases.context import RunContext, phase_failed
from automl_pipeline.training.metrics import paired_bootstrap_win_rate

NAME = "evidence"
# The share of bootstrap resamples of the validation images in which a validation choice must beat the bag.
CONFIDENCE = 0.95
RESAMPLES = 2000


def the_bag(pool: list[Candidate]) -> Candidate | None:
    """The run's k-fold bag with the best out-of-fold macro-F1 over every pooled image (ties: the earliest
    offered; phases/bagging.py may bag several top-rung configurations on the same folds), or None."""
    bags = [c for c in pool if (c.architecture or {}).get("kind") == bagging.KIND]
    if not bags:
        return None
    return max(enumerate(bags), key=lambda ib: (ib[1].oof_macro_f1 if ib[1].oof_macro_f1 is not None else -1.0,
                                              -ib[0]))[1]


def run(ctx: RunContext) -> None:
    """Compare the delivered model with the bag on the validation images; deliver the bag unless the
    delivered model wins in CONFIDENCE of the resamples. The model passed over becomes the runner-up,
    so the report puts the two side by side on the held-out test."""
    section: dict = {"confidence": CONFIDENCE, "resamples": RESAMPLES}
    ctx.report[NAME] = section
    try:
        _weigh(ctx, section)
    except Exception as err:   # noqa: BLE001 - a failed comparison leaves the validation split's choice delivered
        section.update(status="failed", reason=phase_failed(ctx.log, NAME, err))


def _weigh(ctx: RunContext, section: dict) -> None:
    best, bag = ctx.delivery.best, the_bag(ctx.delivery.pool)
    if bag is None or best is None:
        section.update(status="skipped", reason="no k-fold bag in this run: the validation split's choice stands")
        return
    section.update(bag=bag.name, bag_val_macro_f1=round(bag.val_macro_f1, 4),
                   bag_oof_macro_f1=None if bag.oof_macro_f1 is None else round(bag.oof_macro_f1, 4))
    if best is bag:
        section.update(status="completed", delivered=bag.name, reason="the bag is also the validation split's choice")
        return
    if best.val_probs is None:
        section.update(status="skipped", reason=f"{best.name} has no stored validation probabilities to compare")
        return
    labels = ctx.data.val.y.cpu().numpy()
    rate = paired_bootstrap_win_rate(labels, best.val_probs.argmax(axis=1), bag.val_probs.argmax(axis=1),
                                     ctx.data.n_classes, resamples=RESAMPLES, seed=ctx.seed)
    section.update(status="completed", challenger=best.name, challenger_val_macro_f1=round(best.val_macro_f1, 4),
                   win_rate=round(rate, 4))
    scores = (f"validation macro-F1 {best.val_macro_f1:.3f} against the bag's out-of-fold {bag.val_macro_f1:.3f} on "
              f"{labels.size} images; ahead in {rate:.0%} of {RESAMPLES} bootstrap resamples (needs {CONFIDENCE:.0%})")
    if rate >= CONFIDENCE:
        section.update(delivered=best.name, reason=f"{best.name} kept over the bag: {scores}")
        ctx.log(section["reason"])
        return
    section.update(delivered=bag.name, reason=f"the bag delivered instead of {best.name}: {scores}")
    ctx.log(section["reason"])
    ctx.delivery.overrule(bag)
    ctx.store.save_delivered(bag)
    ctx.delivery.runner_up = best
