"""Faults the run survives: failing and NaN trials, a hung trial, a hung phase, SIGINT, a kill
while a checkpoint is written, and a warm start that must not redo finished trials."""
from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ConfigSpace import ConfigurationSpace, Float

from automl_pipeline.bohb import BohbOptions, run_bohb
from automl_pipeline.bohb.space import config_fits
from automl_pipeline.checkpoints import Checkpoints, fingerprint, load_tensors, save_tensors
from automl_pipeline.phases import architecture, hyperparameters

from tests.processes import signal_after_first_predictions

REPO = Path(__file__).resolve().parents[1]


def _space(seed: int = 0) -> ConfigurationSpace:
    cs = ConfigurationSpace(seed=seed)
    cs.add([Float("lr", (1e-4, 1e-1), log=True, default=1e-2), Float("x", (0.0, 1.0))])
    return cs


def _phase(seconds: float):
    start = time.monotonic()
    return lambda: max(0.0, seconds - (time.monotonic() - start))


def _ok(f1: float) -> dict:
    return {"loss": 1.0 - f1, "info": {"val_macro_f1": f1, "evaluated": True, "error": None, "epochs_done": 1,
                                       "stopped_by_deadline": False}}


# --------------------------------------------------------------------------- BOHB trials

def test_raising_and_nan_trials_are_results_not_a_dead_search(tmp_path):
    def evaluate(config, budget, ctx, time_left):
        if config["x"] < 0.3:
            raise RuntimeError("CUDA out of memory (injected)")
        if config["x"] < 0.6:
            return {"loss": float("nan"), "info": {"val_macro_f1": float("nan"), "evaluated": True, "error": None}}
        return _ok(config["x"])

    result = run_bohb(None, config_space=_space(), options=BohbOptions(min_budget=1, max_budget=3, wrapup_s=1.0),
                      time_left=_phase(3.0), out_dir=tmp_path, evaluate=evaluate, log=lambda s: None)
    failed = [t for t in result.trials if t.config["x"] < 0.3]
    nan = [t for t in result.trials if 0.3 <= t.config["x"] < 0.6]
    good = [t for t in result.trials if t.config["x"] >= 0.6]
    assert failed and good and nan, [t.config for t in result.trials]
    assert all("out of memory" in t.error and t.loss == 1.0 for t in failed)
    assert all(math.isfinite(t.loss) for t in result.trials)
    assert all(t.loss == 1.0 and "loss is nan" in (t.error or "") for t in nan)   # a NaN loss is a failed trial
    assert result.incumbent_config is not None and result.incumbent_config["x"] >= 0.6
    assert any("out of memory" in e for e in result.report()["errors"])
    lines = (tmp_path / "bohb" / "results.json").read_text().splitlines()
    assert len(lines) == len(result.trials)       # every trial, failed or not, is on disk


def test_a_hung_trial_does_not_hold_the_phase_past_its_deadline(tmp_path):
    never = threading.Event()

    def hang(config, budget, ctx, time_left):     # ignores its deadline: hangs for good (a daemon thread)
        never.wait()

    started = time.monotonic()
    result = run_bohb(None, config_space=_space(), options=BohbOptions(min_budget=1, max_budget=3, wrapup_s=1.0),
                      time_left=_phase(3.0), out_dir=tmp_path, evaluate=hang, log=lambda s: None)
    elapsed = time.monotonic() - started
    assert elapsed < 3.0 + 0.5, elapsed
    assert result.incumbent_config is None and result.trials == []


def test_warm_start_from_kept_trials_does_not_redo_them(tmp_path):
    """The resumed attempt's BOHB (other sampling seed, previous trials fed to its model)."""
    first = run_bohb(None, config_space=_space(seed=0), options=BohbOptions(min_budget=1, max_budget=3, wrapup_s=1.0),
                     time_left=_phase(4.0), out_dir=tmp_path, evaluate=lambda c, b, ctx, t: _ok(c["x"]),
                     log=lambda s: None)
    assert first.trials
    ck = Checkpoints(tmp_path)
    ck.dir.mkdir()                    # as the first attempt's start() left it (start() would clear bohb/)
    assert hyperparameters.archive_trials(ck) == len(first.trials)
    space = _space(seed=7919)
    previous = hyperparameters.previous_trials_dir(ck, lambda config: config_fits(space, config))
    second = run_bohb(None, config_space=space,
                      options=BohbOptions(min_budget=1, max_budget=3, seed=7919, wrapup_s=1.0),
                      time_left=_phase(4.0), out_dir=tmp_path, previous_result=previous,
                      evaluate=lambda c, b, ctx, t: _ok(c["x"]), log=lambda s: None)
    old = {json.dumps(t.config, sort_keys=True) for t in first.trials}
    new = {json.dumps(t.config, sort_keys=True) for t in second.trials}
    assert second.trials and not old & new
    assert len(second.hpbandster_result.get_all_runs()) == len(first.trials) + len(second.trials)


# --------------------------------------------------------------------------- checkpoint writes

def test_a_kill_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "darts.pt"
    save_tensors(path, {"epoch": 1, "w": torch.ones(3)})

    def killed(src, dst):
        raise KeyboardInterrupt("killed during os.replace")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_tensors(path, {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert load_tensors(path)["epoch"] == 1 and torch.equal(load_tensors(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["darts.pt"]          # no temp file left behind
    # a SIGKILL leaves a half-written temp file: readers never look at it
    (tmp_path / ".darts.pt.abc.tmp").write_bytes(b"PK\x03\x04 truncated")
    assert load_tensors(path)["epoch"] == 1


def test_a_damaged_darts_checkpoint_means_starting_darts_afresh(tmp_path):
    ck = Checkpoints(tmp_path)
    ck.start(fingerprint(data_dir=None, method="ours", seed=0, image_side_cap=32), resume=False)
    architecture.save_progress(ck, {"epoch": 2, "alphas": torch.zeros(2, 2)}, {"n_train": 10})
    assert architecture.load_progress(ck)["state"]["epoch"] == 2
    data = (ck.dir / "darts.pt").read_bytes()
    (ck.dir / "darts.pt").write_bytes(data[: len(data) // 2])
    assert architecture.load_progress(ck) is None


def test_checkpoint_refuses_pickled_objects(tmp_path):
    import datetime

    torch.save({"x": datetime.date(2020, 1, 1)}, tmp_path / "evil.pt")    # an arbitrary pickled object
    with pytest.raises(pickle.UnpicklingError):
        load_tensors(tmp_path / "evil.pt")


# --------------------------------------------------------------------------- the process

def _check_predictions(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    predictions = np.load(out / "predictions.npy", allow_pickle=False)
    assert predictions.dtype == np.int64 and len(predictions) == report["data"]["n_predict"]
    assert predictions.min() >= 0 and predictions.max() < report["data"]["n_classes"]
    return report


def test_hung_phase_is_ended_by_the_watchdog_with_valid_predictions(tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    # run.py, with the final fit replaced by one that never returns (as a stuck phase would); the final
    # fit runs at every budget (the plan may give the searches' time away)
    hang = ("import sys, time\n"
            "from automl_pipeline.phases import final_fit\n"
            "from automl_pipeline.cli import exit_at_once, main\n"
            "def stuck(*args, **kwargs):\n"
            "    while True:\n"
            "        time.sleep(0.5)\n"
            "    yield\n"
            "final_fit.fit_for_the_time_left = stuck\n"
            "exit_at_once(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", hang, "--time-limit", "20", "--output-dir", str(out),
                           "--quiet", "--device", "cpu"], cwd=REPO, capture_output=True, text=True, timeout=60)
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert wall < 20, wall
    report = _check_predictions(out)
    assert report["status"] == "stopped_by_watchdog"
    running = [p["name"] for p in report["phases"] if p.get("start_s") is not None and p.get("end_s") is None]
    assert running == ["final_fit"]


def test_a_stuck_tensor_conversion_still_leaves_the_fallback_predictions(tmp_path):
    """The majority fallback is on disk as soon as the splits exist: a 50,000-image set whose tensors took
    longer than a 12 s limit's work time once ended a run with exit 3 and no predictions."""
    out = tmp_path / "out"
    hang = ("import sys, time\n"
            "from automl_pipeline import pipeline\n"
            "from automl_pipeline.cli import exit_at_once, main\n"
            "def stuck(*args, **kwargs):\n"
            "    while True:\n"
            "        time.sleep(0.5)\n"
            "pipeline._to_run_data = stuck\n"
            "exit_at_once(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", hang, "--time-limit", "15", "--output-dir", str(out),
                           "--quiet", "--device", "cpu"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = _check_predictions(out)
    assert report["status"] == "stopped_by_watchdog" and report["final"]["source"] == "majority_fallback"


def test_sigint_exits_130_with_valid_predictions(tmp_path):
    out = tmp_path / "out"
    returncode, stderr = signal_after_first_predictions(out, signal.SIGINT, settle_s=1,
                                                        extra_args=("--device", "cpu"))
    assert returncode == 130, stderr[-2000:]
    assert _check_predictions(out)["status"] == "stopped_by_signal"


# --------------------------------------------------------------------------- a stop during a delivery

def test_a_report_during_a_delivery_describes_the_predictions_on_disk(tmp_path, monkeypatch):
    """The watchdog may write the report while the main thread is between predictions and model.pt:
    the report's model is the one whose predictions are on disk, and it waits briefly for model.pt."""
    from automl_pipeline import delivery as delivery_module
    from automl_pipeline.delivery import Candidate, Delivery

    in_model_write, release = threading.Event(), threading.Event()
    real_write_model = delivery_module.write_model

    def slow_write_model(*args, **kwargs):
        in_model_write.set()
        release.wait(10)
        real_write_model(*args, **kwargs)

    monkeypatch.setattr(delivery_module, "write_model", slow_write_model)
    delivery = Delivery(tmp_path, predict_ids=["a", "b", "c"], class_names=["x", "y", "z"], log=lambda s: None)

    def candidate(f1: float, labels: list[int]) -> Candidate:
        return Candidate(source=f"model {f1}", val_macro_f1=f1, predict_labels=np.array(labels),
                         test_predictions=np.array(labels), state_dict={"w": torch.zeros(1)})

    offering = threading.Thread(target=delivery.offer, args=(candidate(0.9, [2, 1, 0]),))
    offering.start()
    assert in_model_write.wait(10)
    assert np.load(tmp_path / "predictions.npy", allow_pickle=False).tolist() == [2, 1, 0]
    assert delivery.settled_best(0.05).source == "model 0.9"      # timed out waiting: still the on-disk one
    threading.Timer(0.3, release.set).start()
    started = time.monotonic()
    assert delivery.settled_best(10).source == "model 0.9"
    assert time.monotonic() - started >= 0.25                     # it waited for model.pt
    assert (tmp_path / "model.pt").exists()
    offering.join(10)
