"""Budget, phases, watchdog and signal handling, on a fake clock where time matters."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from budget import Budget, FakeClock, Watchdog, default_margin_s, install_signal_handlers, process_elapsed_s

REPO_ROOT = Path(__file__).resolve().parents[1]


# -- clock and margin ------------------------------------------------------------------

def test_fake_clock_moves_only_when_advanced():
    clock = FakeClock(10.0)
    assert clock() == 10.0
    clock.advance(2.5)
    assert clock() == 12.5
    with pytest.raises(ValueError):
        clock.advance(-1)


@pytest.mark.parametrize("limit, expected", [
    (1.0, 0.2),       # short limits: 20 %
    (5.0, 1.0),
    (10.0, 2.0),      # both rules meet
    (30.0, 2.0),      # 2 s floor
    (300.0, 12.0),    # 4 %
    (7200.0, 60.0),   # 60 s cap
])
def test_default_margin_rule(limit, expected):
    assert default_margin_s(limit) == pytest.approx(expected)


def test_default_margin_is_monotonic_and_below_the_limit():
    limits = [0.5 * 1.1 ** k for k in range(120)]
    margins = [default_margin_s(limit) for limit in limits]
    assert all(a <= b + 1e-12 for a, b in zip(margins, margins[1:]))
    assert all(m < limit for m, limit in zip(margins, limits))


def test_budget_rejects_bad_arguments():
    with pytest.raises(ValueError):
        Budget(0, clock=FakeClock())
    with pytest.raises(ValueError):
        Budget(10, clock=FakeClock(), margin_s=10)
    with pytest.raises(ValueError):
        Budget(10, clock=FakeClock(), already_elapsed_s=-1)


# -- the deadline ----------------------------------------------------------------------

def test_remaining_follows_the_clock():
    clock = FakeClock(100.0)
    budget = Budget(60, clock=clock, margin_s=10)
    assert budget.elapsed() == 0
    assert budget.remaining() == 50
    assert budget.hard_remaining() == 60
    clock.advance(45)
    assert budget.remaining() == 5
    clock.advance(5)
    assert budget.remaining() == 0
    assert budget.hard_remaining() == 10
    clock.advance(100)
    assert budget.remaining() == 0 and budget.hard_remaining() == 0


def test_already_elapsed_counts_from_process_start():
    clock = FakeClock()
    budget = Budget(60, clock=clock, margin_s=10, already_elapsed_s=7)
    assert budget.elapsed() == 7
    assert budget.remaining() == 43
    assert budget.hard_remaining() == 53


def test_process_elapsed_counts_from_process_start():
    """A child that sleeps before it asks: the answer includes the sleep (time before the call, before
    the import) and no more than the child lived. psutil's create time rests on the boot time in whole
    seconds (/proc/stat btime), so it may be off by up to 1 s either way."""
    sleep_s = 1.5
    code = (f"import time; time.sleep({sleep_s}); from budget.process import process_elapsed_s; "
            "print(process_elapsed_s())")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    lived = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    elapsed = float(proc.stdout)
    assert sleep_s - 1.0 <= elapsed <= lived + 1.0, (elapsed, lived)


def test_process_elapsed_is_zero_when_the_start_is_unknown_or_ahead(monkeypatch):
    import psutil

    from budget import process as process_module

    class NoStart:
        def create_time(self):
            raise psutil.AccessDenied()

    monkeypatch.setattr(process_module, "psutil", SimpleNamespace(Process=NoStart, Error=psutil.Error))
    assert process_elapsed_s() == 0.0
    monkeypatch.undo()
    before = process_elapsed_s()
    assert before > 0.0
    # a wall clock set back below the process's start time: clamped to 0, not negative
    monkeypatch.setattr(process_module, "time", SimpleNamespace(time=lambda: time.time() - before - 3600))
    assert process_elapsed_s() == 0.0


# -- the plan --------------------------------------------------------------------------

def test_allotment_is_weighted_share_of_what_is_left():
    clock = FakeClock()
    budget = Budget(110, clock=clock, margin_s=10)
    budget.plan([("a", 1), ("b", 1), ("c", 2)])
    phase = budget.start_phase("a")
    assert phase.planned_s == pytest.approx(25)
    assert phase.remaining() == pytest.approx(25)
    clock.advance(25)
    assert phase.remaining() == 0 and budget.remaining() == pytest.approx(75)


def test_unused_time_rolls_over_to_later_phases():
    clock = FakeClock()
    budget = Budget(110, clock=clock, margin_s=10)
    budget.plan([("a", 1), ("b", 1), ("c", 2)])
    with budget.start_phase("a"):
        clock.advance(5)            # used 5 of its 25
    with budget.start_phase("b") as b:
        assert b.planned_s == pytest.approx(95 / 3)
        clock.advance(10)
    with budget.start_phase("c") as c:
        assert c.planned_s == pytest.approx(85)   # the last phase gets all that remains
        assert c.remaining() == pytest.approx(85)


def test_last_phase_gets_everything_even_with_zero_weight():
    clock = FakeClock()
    budget = Budget(110, clock=clock, margin_s=10)
    budget.plan([("a", 1), ("b", 0)])
    with budget.start_phase("a") as a:
        assert a.planned_s == pytest.approx(100)
        clock.advance(30)
    assert budget.start_phase("b").planned_s == pytest.approx(70)


def test_skipped_phase_gives_its_share_to_the_others():
    clock = FakeClock()
    budget = Budget(110, clock=clock, margin_s=10)
    budget.plan([("a", 1), ("darts", 2), ("c", 1)])
    budget.skip_phase("darts", "too little time")
    assert budget.start_phase("a").planned_s == pytest.approx(50)
    with pytest.raises(ValueError, match="skipped"):
        budget.start_phase("darts")


def test_starting_a_phase_not_in_the_plan_raises_a_clear_error():
    budget = Budget(100, clock=FakeClock())
    budget.plan([("a", 1)])
    with pytest.raises(ValueError, match="'nope'.*not in the plan"):
        budget.start_phase("nope")


def test_a_phase_cannot_start_twice_or_while_another_runs():
    budget = Budget(100, clock=FakeClock())
    budget.plan([("a", 1), ("b", 1)])
    budget.start_phase("a")
    with pytest.raises(RuntimeError, match="'a' is still running"):
        budget.start_phase("b")
    with pytest.raises(ValueError, match="already running"):
        budget.start_phase("a")


def test_plan_replaces_pending_phases_and_keeps_history():
    clock = FakeClock()
    budget = Budget(110, clock=clock, margin_s=10)
    budget.plan([("setup", 1), ("old", 1)])
    with budget.start_phase("setup"):
        clock.advance(10)
    budget.plan([("x", 1), ("y", 3)])
    assert [row["name"] for row in budget.phases_report()] == ["setup", "x", "y"]
    assert budget.start_phase("x").planned_s == pytest.approx(90 / 4)
    with pytest.raises(ValueError):
        budget.plan([("setup", 1)])
    with pytest.raises(ValueError, match="unique"):
        budget.plan([("z", 1), ("z", 1)])


def test_phase_deadline_never_beyond_the_work_deadline():
    clock = FakeClock()
    budget = Budget(100, clock=clock, margin_s=10)
    budget.plan([("only", 1)])
    phase = budget.start_phase("only")
    assert phase.deadline <= budget.work_deadline
    # even a phase whose own deadline was set generously is capped by the budget
    phase.deadline = budget.work_deadline + 1000
    clock.advance(85)
    assert phase.remaining() == pytest.approx(5)
    clock.advance(10)
    assert phase.remaining() == 0


def test_a_finished_phase_has_no_time_left():
    budget = Budget(100, clock=FakeClock())
    budget.plan([("a", 1), ("b", 1)])
    phase = budget.start_phase("a")
    assert phase.remaining() > 0
    phase.finish()
    phase.finish()   # idempotent
    assert phase.remaining() == 0


def test_phases_report_records_times_since_process_start():
    clock = FakeClock(1000.0)
    budget = Budget(110, clock=clock, margin_s=10, already_elapsed_s=2)
    budget.plan([("a", 1), ("skipme", 1), ("b", 1), ("c", 1)])
    budget.skip_phase("skipme", "no GPU")
    clock.advance(1)
    with budget.start_phase("a"):
        clock.advance(4)
    budget.start_phase("b")
    clock.advance(1)
    report = budget.phases_report()
    assert report == [
        {"name": "a", "status": "done", "planned_s": pytest.approx(97 / 3, abs=1e-3), "start_s": 3.0, "end_s": 7.0},
        {"name": "skipme", "status": "skipped", "planned_s": 0.0, "start_s": None, "end_s": None,
         "skipped": "no GPU"},
        {"name": "b", "status": "running", "planned_s": pytest.approx(46.5), "start_s": 7.0, "end_s": None},
        {"name": "c", "status": "pending", "planned_s": None, "start_s": None, "end_s": None},
    ]


def test_skipping_an_unplanned_phase_is_reported():
    budget = Budget(100, clock=FakeClock())
    budget.plan([("a", 1)])
    budget.skip_phase("darts", "baseline run")
    assert budget.phases_report()[-1]["skipped"] == "baseline run"


def test_a_phase_that_started_and_then_did_not_run_is_reported_skipped():
    """A search starts its phase, then finds it cannot run (too short to plan, or it failed): its row
    says skipped with the reason, keeping the seconds it took to decide; the next phase still starts."""
    clock = FakeClock()
    budget = Budget(110, clock=clock, margin_s=10)
    budget.plan([("darts", 1), ("bohb", 1), ("final_fit", 1), ("later", 1)])
    with budget.start_phase("darts"):
        clock.advance(2)
    budget.mark_skipped("darts", "12 architecture steps fit in 30s; at least 120 are needed")
    bohb = budget.start_phase("bohb")
    clock.advance(3)
    budget.mark_skipped("bohb", "failed (RuntimeError: boom)")        # while running: it ends now
    bohb.finish()                                                       # the context manager's exit
    budget.mark_skipped("later", "not needed")                          # still pending: as skip_phase
    budget.mark_skipped("later", "a second reason")                     # already skipped: the first one stays
    rows = {row["name"]: row for row in budget.phases_report()}
    assert rows["darts"] == {"name": "darts", "status": "skipped", "planned_s": 25.0, "start_s": 0.0,
                             "end_s": 2.0,
                             "skipped": "12 architecture steps fit in 30s; at least 120 are needed"}
    assert rows["bohb"]["status"] == "skipped" and rows["bohb"]["end_s"] == 5.0
    assert rows["bohb"]["skipped"] == "failed (RuntimeError: boom)"
    assert rows["later"]["status"] == "skipped" and rows["later"]["skipped"] == "not needed"
    assert budget.start_phase("final_fit").planned_s == pytest.approx(95)   # the skipped ones gave theirs up


# -- watchdog --------------------------------------------------------------------------

class ExitRecorder:
    """Stands in for os._exit: records the code and wakes the test."""

    def __init__(self):
        self.codes: list[int] = []
        self.called = threading.Event()

    def __call__(self, code: int) -> None:
        self.codes.append(code)
        self.called.set()


def test_watchdog_does_not_fire_early_then_fires_at_the_grace_point():
    clock = FakeClock()
    budget = Budget(10, clock=clock, margin_s=2)
    calls = []
    exit_recorder = ExitRecorder()
    watchdog = Watchdog(budget, lambda: calls.append(clock()), grace_s=1.0, exit_code=3,
                        poll_s=0.002, exit=exit_recorder)
    watchdog.start()
    clock.advance(8.9)                       # hard_remaining 1.1 > grace
    assert not exit_recorder.called.wait(0.05)
    assert calls == []
    clock.advance(0.2)                       # hard_remaining 0.9 <= grace
    assert exit_recorder.called.wait(0.5)
    assert calls == [pytest.approx(9.1)]
    assert exit_recorder.codes == [3]
    assert watchdog.fired.is_set()


def test_watchdog_exits_even_when_on_timeout_raises(capsys):
    clock = FakeClock()
    budget = Budget(10, clock=clock, margin_s=2)
    exit_recorder = ExitRecorder()

    def broken():
        raise RuntimeError("disk on fire")

    Watchdog(budget, broken, grace_s=1.0, poll_s=0.002, exit=exit_recorder).start()
    clock.advance(9.5)
    assert exit_recorder.called.wait(0.5)
    assert exit_recorder.codes == [0]
    assert "disk on fire" in capsys.readouterr().err


def test_watchdog_exits_even_when_on_timeout_hangs():
    clock = FakeClock()
    budget = Budget(10, clock=clock, margin_s=2)
    exit_recorder = ExitRecorder()
    release = threading.Event()
    Watchdog(budget, release.wait, grace_s=1.0, poll_s=0.002, exit=exit_recorder,
             handler_timeout_s=0.05).start()
    clock.advance(9.5)
    try:
        assert exit_recorder.called.wait(0.5)
    finally:
        release.set()


def test_stopped_watchdog_never_fires():
    clock = FakeClock()
    budget = Budget(10, clock=clock, margin_s=2)
    exit_recorder = ExitRecorder()
    watchdog = Watchdog(budget, lambda: None, poll_s=0.002, exit=exit_recorder)
    watchdog.start()
    watchdog.stop()
    clock.advance(100)
    assert not exit_recorder.called.wait(0.05)


# -- signals ---------------------------------------------------------------------------

def test_signal_handler_runs_callback_and_exits_with_code_in_process():
    """SIGINT in this process with an injected exit: callback, then 130; a second signal is ignored."""
    seen: list[int] = []
    exit_recorder = ExitRecorder()
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        install_signal_handlers(seen.append, exit=exit_recorder)
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)   # re-entrance guard: ignored
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert seen == [signal.SIGINT]
    assert exit_recorder.codes == [130]


SIGNAL_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from budget import install_signal_handlers

    marker = Path(sys.argv[1])

    def save(signum):
        marker.write_text(f"saved after signal {signum}")

    install_signal_handlers(save)
    print("ready", flush=True)
    time.sleep(30)
    sys.exit(5)   # reached only if the signal was not handled
""")


@pytest.mark.parametrize("signum, expected_code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signal_in_a_child_process_saves_and_exits(tmp_path, signum, expected_code):
    marker = tmp_path / "saved.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen([sys.executable, "-c", SIGNAL_CHILD, str(marker)], stdout=subprocess.PIPE,
                             text=True, env=env, cwd=REPO_ROOT)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signum)
        code = child.wait(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert code == expected_code
    assert marker.read_text() == f"saved after signal {int(signum)}"


def test_budget_never_imports_torch():
    code = "import sys, budget; sys.exit(1 if 'torch' in sys.modules else 0)"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, timeout=30)
    assert result.returncode == 0, "importing budget pulled in torch"
