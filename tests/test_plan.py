"""The run's plan (budget.plan.plan_run) on made-up costs: searches given away when they cannot rank in
the time left, sized when they can; and the budget acting on it with an injected clock."""
import pytest

from budget import Budget, FakeClock
from budget import plan
from budget.plan import DARTS_MIN_S, FINAL_EPOCHS, MIN_RANKING_EPOCHS, RunFacts, bohb_seconds_needed, plan_run

def names(plan):
    return [name for name, _ in plan.weights]


def test_short_budget_gives_every_search_away_with_the_numbers():
    """300 s at 20 s per epoch: 15 epochs, fewer than the final fit needs: no search, said with numbers."""
    plan = plan_run(RunFacts(seconds_left=300, epoch_s=20.0))
    assert names(plan) == ["final_fit"]
    assert set(plan.skipped) == {"darts", "bohb"}
    assert "holds 15 epochs" in plan.reason and f"needs about {FINAL_EPOCHS}" in plan.reason
    assert plan.reason.endswith("no time to search")
    assert plan.weights[0][1] == pytest.approx(300)


def test_bohb_needs_a_first_bracket_at_the_ranking_budget():
    """Room for the final fit and DARTS but not for a bracket at >= 2 epochs: DARTS runs, BOHB is given away."""
    epoch_s = 1.0
    final = FINAL_EPOCHS * epoch_s
    left = final + DARTS_MIN_S + 0.5 * bohb_seconds_needed(MIN_RANKING_EPOCHS, epoch_s)
    plan = plan_run(RunFacts(seconds_left=left, epoch_s=epoch_s))
    assert names(plan) == ["darts", "final_fit"]
    assert list(plan.skipped) == ["bohb"] and plan.skipped["bohb"].endswith("no time for BOHB")


def test_long_budget_runs_both_searches_and_the_final_fit_keeps_its_need():
    """The mission: 7200 s on ~1,000 images (about 2 s per epoch)."""
    plan = plan_run(RunFacts(seconds_left=7000, epoch_s=2.0))
    assert names(plan) == ["darts", "bohb", "final_fit"] and not plan.skipped
    weights = dict(plan.weights)
    assert sum(weights.values()) == pytest.approx(7000)
    assert weights["final_fit"] >= plan.final_epochs * 2.0
    assert weights["bohb"] >= bohb_seconds_needed(plan.ranking_epochs, 2.0)
    assert weights["darts"] >= DARTS_MIN_S
    assert "fit, with" in plan.reason


def test_darts_gets_the_time_it_measured_or_none():
    """A measured DARTS need (RunFacts.darts_s) replaces DARTS_MIN_S: reserved in full when it fits beside
    the final fit and BOHB, given away with its number when it does not."""
    epoch_s = 1.0
    before = FINAL_EPOCHS * epoch_s + bohb_seconds_needed(MIN_RANKING_EPOCHS, epoch_s)
    plan = plan_run(RunFacts(seconds_left=before + 70, epoch_s=epoch_s, darts_s=60.0))
    assert names(plan) == ["darts", "bohb", "final_fit"] and dict(plan.weights)["darts"] >= 60.0
    assert plan.needs_s["darts"] == 60.0
    plan = plan_run(RunFacts(seconds_left=before + 50, epoch_s=epoch_s, darts_s=60.0))
    assert names(plan) == ["bohb", "final_fit"] and list(plan.skipped) == ["darts"]
    assert "leaving 50s where DARTS needs about 60s: no time for DARTS" in plan.skipped["darts"]
    with pytest.raises(ValueError):
        plan_run(RunFacts(seconds_left=100, epoch_s=1.0, darts_s=float("nan")))


def test_without_darts_the_plan_never_mentions_it():
    plan = plan_run(RunFacts(seconds_left=7000, epoch_s=2.0, darts_enabled=False))
    assert names(plan) == ["bohb", "final_fit"] and not plan.skipped
    short = plan_run(RunFacts(seconds_left=100, epoch_s=2.0, darts_enabled=False))
    assert list(short.skipped) == ["bohb"] and short.reason.endswith("no time to search")


def test_the_budget_executes_the_plan_with_an_injected_clock():
    """The plan's weights go to Budget.plan; the skipped searches are recorded as skipped."""
    clock = FakeClock()
    budget = Budget(1000, clock=clock, margin_s=0)
    budget.plan([("first_model", 0.1), ("darts", 0.2), ("bohb", 0.35), ("final_fit", 0.35)])
    with budget.start_phase("first_model"):
        clock.advance(100)
    plan = plan_run(RunFacts(seconds_left=budget.remaining(), epoch_s=40.0))
    for name, why in plan.skipped.items():
        budget.skip_phase(name, why)
    budget.plan(list(plan.weights))
    assert budget.start_phase("final_fit").planned_s == pytest.approx(900)
    rows = {row["name"]: row for row in budget.phases_report()}
    assert rows["darts"]["status"] == rows["bohb"]["status"] == "skipped"
    assert "no time to search" in rows["bohb"]["skipped"]


def test_bad_epoch_cost_is_refused():
    with pytest.raises(ValueError):
        plan_run(RunFacts(seconds_left=100, epoch_s=0.0))


def test_the_baseline_runs_the_same_plan_as_ours_with_darts_off():
    """One initial plan for both methods, and the same plan after the first model: the baseline's
    DARTS share is not a BOHB share of its own (it was 0.60 against ours' 0.35)."""
    from types import SimpleNamespace

    from automl_pipeline import pipeline
    from automl_pipeline.search_options import SearchOptions

    baseline = SimpleNamespace(options=SearchOptions().for_method("baseline"))
    darts_off = SimpleNamespace(options=SearchOptions(darts="off"))
    assert pipeline.plan_darts_here(baseline) is pipeline.plan_darts_here(darts_off) is False
    assert pipeline.plan_darts_here(SimpleNamespace(options=SearchOptions())) is True
    assert not hasattr(pipeline, "PLAN_BASELINE")
    assert [name for name, _ in pipeline.phase_plan(1000.0)] == ["first_model", "darts", "bohb", "final_fit"]


def test_the_first_network_is_skipped_only_when_no_search_could_run_at_half_the_probe():
    # 50 s left at a 5 s probe: 20 epochs even at 2.5 s, fewer than the final fit's 30
    pays, why = plan.first_network_pays(50.0, 5.0)
    assert not pays and "20 epochs" in why and f"final fit's {plan.FINAL_EPOCHS}" in why
    # 80 s at 5 s: 32 epochs at half the probe, so a search may still fit once real epochs are timed
    assert plan.first_network_pays(80.0, 5.0) == (True, "")
    assert plan.first_network_pays(plan.FINAL_EPOCHS * 2.5, 5.0)[0]            # the edge: exactly 30 fit
    with pytest.raises(ValueError):
        plan.first_network_pays(50.0, 0.0)
