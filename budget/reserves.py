"""Every safety reserve of the package in one place: seconds (or shares of time) kept back from work
so that a run ends inside its limit with its outputs written. No imports; every module that keeps
time back takes its number from here.

Run (pipeline.py, budget/manager.py):
"""
# The work deadline is the limit minus an output margin: OUTPUT_MARGIN_SHARE of the limit, at least
# OUTPUT_MARGIN_MIN_S (less on limits under 10 s: OUTPUT_MARGIN_SMALL_SHARE of it), at most OUTPUT_MARGIN_MAX_S.
OUTPUT_MARGIN_SHARE = 0.04
OUTPUT_MARGIN_MIN_S = 2.0
OUTPUT_MARGIN_SMALL_SHARE = 0.2
OUTPUT_MARGIN_MAX_S = 60.0
# report.md's plots, on runs of at least PLOTS_MIN_LIMIT_S (measured: 3.6 s for all plots of a digits run on 2 cores).
PLOTS_RESERVE_S = 6.0
PLOTS_MIN_LIMIT_S = 120.0
# The watchdog acts this long before the limit: enough to write report.json and report.md (no plots).
WATCHDOG_GRACE_S = 1.5
# The report waits this long for a delivery in progress (predictions + model.pt); well inside the grace.
DELIVERY_WAIT_S = 0.4
# Below this no run can deliver: starting Python and torch alone takes about 4-5 s on 2 cores.
MIN_TIME_LIMIT_S = 10.0

# Phases (phases/, training/planning.py):
# Plans (epochs, DARTS steps) use this share of the time they are given (noise between probe and run).
PLAN_SHARE = 0.9
# A search phase shorter than this is skipped without even timing it (timing costs seconds).
MIN_SEARCH_PHASE_S = 15.0
# BOHB keeps BOHB_WRAPUP_SHARE of its phase (clamped to [BOHB_WRAPUP_MIN_S, BOHB_WRAPUP_MAX_S]) for running
# trials to report and for shutdown; of that, the last min(wrapup, max(BOHB_SHUTDOWN_MIN_S, min(BOHB_SHUTDOWN_MAX_S,
# wrapup / 2))) seconds are for shutting master, workers and name server down (~0.4 s on a loaded 2-core machine).
BOHB_WRAPUP_SHARE = 0.05
BOHB_WRAPUP_MIN_S = 2.0
BOHB_WRAPUP_MAX_S = 10.0
BOHB_SHUTDOWN_MIN_S = 0.75
BOHB_SHUTDOWN_MAX_S = 2.0
# The final fit leaves this much of its phase to the ensemble selection and its model.pt (numpy over stored
# probabilities: well under a second for 10 candidates; writing the members' weights a fraction of one).
ENSEMBLE_RESERVE_S = 2.0
# Seconds a BOHB trial costs beyond its training epochs (building, validation passes, messages), for planning.
TRIAL_OVERHEAD_S = 0.3

# Steps (training/deadline.py: training batches and DARTS steps):
# A step starts only when STEP_SAFETY x the slowest of the last STEP_WINDOW steps (+ a validation pass) fits.
STEP_SAFETY = 1.5
STEP_WINDOW = 10
