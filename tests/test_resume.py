"""--resume: checkpoints of DARTS, BOHB trials and the delivered model; refusals; a SIGKILL mid-BOHB."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hpbandster.core.result import logged_results_to_HBS_result
from sklearn.datasets import load_digits

from automl_pipeline.bohb.results import BohbResult, TrialRecord
from automl_pipeline.checkpoints import Checkpoints, fingerprint, load_tensors, save_tensors
from automl_pipeline.darts import DartsConfig, DartsResult, run_darts
from automl_pipeline.delivery import Candidate
from automl_pipeline.errors import InputError
from automl_pipeline.phases import hyperparameters
from automl_pipeline.training import TensorData

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = torch.tensor((d.images[:, None] / 16.0 - 0.3) / 0.4, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.int64)
    return TensorData(x[:48], y[:48]), TensorData(x[48:96], y[48:96])


def _fp(seed=0, **kw):
    return fingerprint(**({"data_dir": None, "method": "ours", "seed": seed, "image_side_cap": 32} | kw))


# --------------------------------------------------------------------------- DARTS

def test_darts_resumed_from_a_checkpoint_equals_an_uninterrupted_search(digits, tmp_path):
    torch.set_num_threads(1)
    train, val = digits
    cfg = DartsConfig(epochs=3, batch_size=16, n_cells=2, base_channels=4, seed=0)
    loss = torch.nn.CrossEntropyLoss()
    saved = []

    def on_checkpoint(state):   # through the disk, as a killed run would leave it
        path = tmp_path / f"darts{len(saved)}.pt"
        save_tensors(path, state)
        saved.append(path)

    straight = run_darts(train, val, 10, cfg, time_left=lambda: 1e9, loss=loss, on_checkpoint=on_checkpoint)
    assert len(saved) == 3
    state = load_tensors(saved[0])              # weights_only=True: tensors and plain types only
    assert state["epoch"] == 1 and len(state["history"]) == 1
    resumed = run_darts(train, val, 10, cfg, time_left=lambda: 1e9, loss=loss, resume=state)
    assert resumed.epochs_run == 3 and len(resumed.history) == 3 and resumed.steps_run == straight.steps_run
    assert np.allclose(resumed.alphas_normal, straight.alphas_normal, atol=1e-6)
    assert np.allclose(resumed.alphas_reduce, straight.alphas_reduce, atol=1e-6)
    assert resumed.genotype == straight.genotype
    # a finished search resumes to the same result without stepping
    done = run_darts(train, val, 10, cfg, time_left=lambda: 1e9, loss=loss, resume=load_tensors(saved[-1]))
    assert done.steps_run == straight.steps_run and np.allclose(done.alphas_normal, straight.alphas_normal)
    back = DartsResult.from_report(straight.report())
    assert back.genotype == straight.genotype and back.config == cfg
    assert np.allclose(back.alphas_reduce, straight.alphas_reduce)


# --------------------------------------------------------------------------- run.json, splits

def test_start_resume_and_refusals(tmp_path):
    ck = Checkpoints(tmp_path)
    with pytest.raises(InputError, match="nothing to resume"):
        ck.start(_fp(), resume=True)
    ck.start(_fp(), resume=False)
    assert ck.attempt == 0
    with pytest.raises(InputError, match="seed was 0, now 1"):
        Checkpoints(tmp_path).start(_fp(seed=1), resume=True)
    with pytest.raises(InputError, match="method"):
        Checkpoints(tmp_path).start(_fp(method="baseline"), resume=True)
    with pytest.raises(InputError, match="image_side_cap"):
        Checkpoints(tmp_path).start(_fp(image_side_cap=64), resume=True)
    with pytest.raises(InputError, match="search"):
        Checkpoints(tmp_path).start(_fp(search={"loss": "ce"}), resume=True)
    again = Checkpoints(tmp_path)
    again.start(_fp(), resume=True)
    assert again.attempt == 1
    (tmp_path / "splits.json").write_text(json.dumps({"train": {"ids": ["a"]}}))
    again.check_splits({"train": {"ids": ["a"]}})
    with pytest.raises(InputError, match="splits differ"):
        again.check_splits({"train": {"ids": ["b"]}})
    # a fresh start clears the old checkpoints
    (again.dir / "delivered.json").write_text("{}")
    Checkpoints(tmp_path).start(_fp(), resume=False)
    assert not (again.dir / "delivered.json").exists()


def test_data_fingerprint_sees_another_folder_and_a_changed_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "train.csv").write_text("x")
    first = _fp(data_dir=tmp_path / "a")
    (tmp_path / "a" / "train.csv").write_text("xy")
    assert _fp(data_dir=tmp_path / "a") != first
    assert _fp(data_dir=tmp_path / "b") != first


# --------------------------------------------------------------------------- delivered model

def _candidate(f1: float, labels) -> Candidate:
    labels = np.asarray(labels, dtype=np.int64)
    return Candidate(source="first_model", description=f"model {f1}", val_macro_f1=f1, predict_labels=labels,
                     test_predictions=labels[::-1], architecture={"a": 1}, config={"lr": 0.1}, epochs=3,
                     train_s=1.5, train_images_per_s=250.0)


def test_delivered_record_round_trip_and_mismatch(tmp_path):
    ck = Checkpoints(tmp_path)
    ck.start(_fp(), resume=False)
    np.save(tmp_path / "predictions.npy", np.array([1, 2, 3]), allow_pickle=False)
    ck.save_delivered(_candidate(0.8, [1, 2, 3]))
    back, rewrite, note = ck.load_delivered(3, 3)
    assert not rewrite and back.val_macro_f1 == 0.8 and back.source == "first_model"
    assert back.description == "model 0.8" and back.train_images_per_s == 250.0
    assert back.test_predictions.tolist() == [3, 2, 1] and "kept" in note
    assert ck.load_delivered(4, 3)[0] is None                       # does not fit the data
    np.save(tmp_path / "predictions.npy", np.array([0, 0, 0]), allow_pickle=False)   # killed in between
    back, rewrite, _ = ck.load_delivered(3, 3)
    assert rewrite and back.predict_labels.tolist() == [1, 2, 3]


# --------------------------------------------------------------------------- BOHB trials

def _bohb_log(directory: Path, trials: list[tuple[list, float, float]], *, cut_last_line: bool = False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    configs, results = [], []
    for i, (config_id, lr, f1) in enumerate(trials):
        configs.append(json.dumps([config_id, {"lr": lr}, {"model_based_pick": False}]))
        stamps = {"submitted": float(i), "started": i + 0.1, "finished": i + 0.5}
        info = {"val_macro_f1": f1, "evaluated": True, "error": None, "epochs_done": 1,
                "fixed": {"cell": "darts"}}     # what the worker adds: values fixed outside the space
        results.append(json.dumps([config_id, 1.0, stamps, {"loss": 1 - f1, "info": info}, None]))
    text = "\n".join(results) + "\n"
    if cut_last_line:
        text += results[-1][:20]
    (directory / "configs.json").write_text("\n".join(configs) + "\n")
    (directory / "results.json").write_text(text)


def test_bohb_trials_are_kept_across_attempts(tmp_path):
    ck = Checkpoints(tmp_path)
    ck.start(_fp(), resume=False)
    _bohb_log(tmp_path / "bohb", [([0, 0, 0], 0.01, 0.7), ([0, 0, 1], 0.02, 0.9)], cut_last_line=True)
    assert hyperparameters.archive_trials(ck) == 2
    assert hyperparameters.archive_trials(ck) == 2                      # the same files again (attempt killed before BOHB)
    # the next attempt's BOHB rewrote the folder; its ids start at 0 again
    _bohb_log(tmp_path / "bohb", [([0, 0, 0], 0.03, 0.8)])
    assert hyperparameters.archive_trials(ck) == 3
    kept = hyperparameters.kept_trials(ck)
    assert len(kept) == 3 and len({t.config_id for t in kept}) == 3
    assert sorted(t.val_macro_f1 for t in kept) == [0.7, 0.8, 0.9]
    previous = hyperparameters.previous_trials_dir(ck, lambda config: config["lr"] < 0.025)     # the lr=0.03 one "does not fit"
    result = logged_results_to_HBS_result(str(previous))
    assert len(result.get_all_runs()) == 2
    # merged with this attempt's trials, the incumbent is chosen over all of them
    new = TrialRecord(config_id=(0, 0, 0), config={"lr": 0.05}, budget=1.0, loss=0.4, val_macro_f1=0.6,
                      evaluated=True, error=None, epochs_done=1, stopped_by_deadline=False, seconds=1.0,
                      worker=None, t_s=1.0, model_based_pick=False)
    current = BohbResult(incumbent_config={"lr": 0.05}, incumbent_val_macro_f1=0.6, incumbent_budget=1.0,
                         min_budget=1.0, max_budget=3.0, eta=3.0, trials=[new], configs_sampled=1,
                         model_based_picks=0, model_min_trials=4, trajectory=[], seconds=1.0, n_workers=1,
                         clean_shutdown=True)
    merged = hyperparameters.merge_kept_trials(current, kept)
    # a kept incumbent keeps the values its trial trained with beyond the sampled ones
    assert merged.incumbent_config == {"lr": 0.02, "cell": "darts"} and merged.report()["n_trials"] == 4
    alone = hyperparameters.merge_kept_trials(None, kept)                # BOHB skipped in this attempt
    assert alone.incumbent_config == {"lr": 0.02, "cell": "darts"}


def test_a_resumed_run_whose_plan_skips_bohb_says_skipped_and_keeps_the_earlier_trials(tmp_path):
    """The plan gave BOHB away in this attempt: its section says skipped, with the plan's reason and the
    kept trials (it said "completed")."""
    from automl_pipeline.phases.context import RunContext
    from automl_pipeline.runlog import RunLog
    from automl_pipeline.settings import Settings
    from budget import Budget, FakeClock
    from tests.data_builders import random_run_data

    ck = Checkpoints(tmp_path)
    ck.start(_fp(), resume=False)
    _bohb_log(tmp_path / "bohb", [([0, 0, 0], 0.01, 0.7), ([0, 0, 1], 0.02, 0.9)])
    assert hyperparameters.archive_trials(ck) == 2
    budget = Budget(100, clock=FakeClock(), margin_s=0)
    budget.plan([("bohb", 0.5), ("final_fit", 0.5)])
    ctx = RunContext(settings=Settings(time_limit_s=100, output_dir=tmp_path, resume=True), budget=budget,
                     data=random_run_data(), log=RunLog(None, quiet=True, elapsed=budget.elapsed,
                                                        remaining=budget.remaining),
                     store=ck, report={}, delivery=None)
    ctx.search_skipped("bohb", "the plan's sentence")
    result = hyperparameters.run(ctx, None)
    section = ctx.report["bohb"]
    assert result is not None and result.incumbent_val_macro_f1 == 0.9
    assert section["status"] == "skipped" and section["n_trials"] == 2 and len(section["kept_trials"]) == 2
    assert section["reason"] == "the plan's sentence; the 2 trials kept from the earlier attempt stand"


# --------------------------------------------------------------------------- the command line

def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_cli_refuses_a_resume_without_checkpoint_or_with_other_settings(tmp_path):
    out = tmp_path / "out"
    proc = _cli("--time-limit", "30", "--output-dir", str(out), "--resume")
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr and "Traceback" not in proc.stderr
    Checkpoints(out).start(_fp(seed=0, image_side_cap=32), resume=False)
    proc = _cli("--time-limit", "30", "--output-dir", str(out), "--resume", "--seed", "3", "--device", "cpu")
    assert proc.returncode == 2 and "seed was 0, now 3" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "predictions.npy").exists()


def _trial_lines(path: Path) -> list[list]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


@contextlib.contextmanager
def _on_one_core():
    """Child processes started inside run on one core (they inherit the calling thread's affinity and
    size torch's threads by it): the cell networks' many small ops ran ~3x slower with 2 threads on 2
    cores shared with other work, which decides whether the run's plan has time for both searches."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(cores)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cores)


def test_sigkill_after_darts_and_a_bohb_trial_then_resume_keeps_both(tmp_path):
    """The full method killed with SIGKILL once DARTS has checkpointed and BOHB has finished a trial:
    `--resume` in the same folder keeps DARTS' epochs (no second search) and the finished trials, and
    completes with predictions."""
    from data_builders import make_npz

    # 150 colour images of 8 px, 3 classes told apart by their dominant channel: the first model gets
    # halfway to its best by epoch ~6 (3 batches an epoch), so the run's plan (budget/plan.py) asks BOHB for
    # a first bracket from ~6 epochs, and DARTS' 15 epochs are 60 steps. The 300 s limit only sizes the
    # plan: both searches fit with ~45 s to spare at 0.32 s per epoch of the default network (one loaded
    # core), and BOHB's own gate (bohb.budgets.choose_budgets) and DARTS' (120 architecture steps) pass
    # with it. The kill comes at BOHB's first finished trial, ~45 s into the run.
    data = make_npz(tmp_path / "data", n_per_class=50, n_classes=3, side=8, rgb=True)
    out = tmp_path / "out"
    args = [sys.executable, str(REPO / "run.py"), "--data-dir", str(data), "--output-dir", str(out), "--quiet",
            "--device", "cpu"]
    limit = 300
    started = time.monotonic()
    with _on_one_core():
        proc = subprocess.Popen([*args, "--time-limit", str(limit)], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def log_text() -> str:
        return (out / "run.log").read_text() if (out / "run.log").exists() else ""

    darts_progress = out / "checkpoints" / "darts.pt"
    deadline = time.monotonic() + limit + 30      # the run ends by its limit; this only guards against a hang
    while (proc.poll() is None and time.monotonic() < deadline
           and not any(f"{search}_skipped" in log_text() for search in ("darts", "bohb"))
           and not (darts_progress.exists() and _trial_lines(out / "bohb" / "results.json"))):
        time.sleep(0.2)
    if proc.poll() is not None or not _trial_lines(out / "bohb" / "results.json"):
        proc.kill()
        proc.wait(timeout=10)
        pytest.fail(f"the first attempt ({limit} s) skipped DARTS or BOHB, or ended before a BOHB trial finished. "
                    f"A search skipped for lack of time means this machine is too slow for this test: its plan "
                    f"needs an epoch of the default network in about 0.4 s or less on one core (run.log "
                    f"below):\n" + log_text()[-2000:])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    killed_after = time.monotonic() - started
    assert darts_progress.exists(), "DARTS did not checkpoint an epoch:\n" + log_text()[-2000:]
    darts_epochs = int(load_tensors(darts_progress)["state"]["epoch"])
    outcome = json.loads((out / "checkpoints" / "darts_outcome.json").read_text())
    assert "result" in outcome, outcome                     # DARTS searched to its end before BOHB began
    assert darts_epochs >= 1 and outcome["result"]["epochs_run"] == darts_epochs
    finished = _trial_lines(out / "bohb" / "results.json")
    assert finished and not (out / "checkpoints" / "bohb_kept.json").exists()
    first_predictions = np.load(out / "predictions.npy", allow_pickle=False)
    delivered_before = json.loads((out / "checkpoints" / "delivered.json").read_text())["val_macro_f1"]

    # 20 s: the kept model is delivered at once, the first model and DARTS are skipped, BOHB's share is
    # too short for a search (the kept trials alone are its result) and the final fit has the rest
    resumed_limit = 20
    started = time.monotonic()
    with _on_one_core():
        resumed = subprocess.run([*args, "--time-limit", str(resumed_limit), "--resume"], cwd=REPO,
                                 capture_output=True, text=True, timeout=60)
    wall = time.monotonic() - started
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert wall < resumed_limit, (wall, killed_after)
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete"
    assert report["resume"]["darts_epochs_kept"] == darts_epochs, (report["resume"], killed_after)
    assert report["resume"]["bohb_trials_kept"] == len(finished), report["resume"]
    events = [e for e in report["events"] if e["kind"] == "resume"]
    assert len(events) == 1, events
    assert f"{darts_epochs} DARTS epochs, {len(finished)} BOHB trials kept" in events[0]["message"]
    # DARTS did not search again: its phase was skipped and its section is the first attempt's search
    darts_phase = next(p for p in report["phases"] if p["name"] == "darts")
    assert "resumed" in darts_phase.get("skipped", ""), darts_phase
    assert report["darts"]["status"] == "completed" and report["darts"]["epochs_run"] == darts_epochs
    kept = report["bohb"].get("kept_trials")
    assert kept, report["bohb"]
    assert sorted(t["val_macro_f1"] for t in kept) == sorted(r[3]["info"]["val_macro_f1"] for r in finished)
    assert report["bohb"]["n_trials"] >= len(finished)
    predictions = np.load(out / "predictions.npy", allow_pickle=False)
    assert predictions.dtype == np.int64 and len(predictions) == len(first_predictions)
    assert predictions.min() >= 0 and predictions.max() < report["data"]["n_classes"]
    assert report["final"]["val_macro_f1"] >= delivered_before     # only a better model replaced it
