"""What a killed run leaves behind for `--resume`: OUT/checkpoints/.

Files (each written atomically: a reader sees the old file or the new one, never half of one):

| file | written | content |
| --- | --- | --- |
| `run.json` | at start | fingerprint of what the results depend on (data source, method, seed, image side, search options), attempt number |
| `delivered.json` | after every delivery | the delivered candidate: source, val macro-F1, held-out and predict labels, sha256 of predictions.npy |
| `darts.pt` | after every DARTS epoch | the search state (`run_darts(on_checkpoint=...)`), tensors and plain types only |
| `darts_outcome.json` | when the DARTS phase ends | the DartsResult report, or why DARTS was skipped: a resumed run reuses it |
| `bohb_kept.json` | at resume | the finished BOHB trials of every earlier attempt, one batch per attempt |
| `bohb_previous/` | at resume | those trials as hpbandster `configs.json`/`results.json`, to warm-start BOHB |

Everything is loaded with `torch.load(weights_only=True)` or JSON: no pickle.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from automl_pipeline.bohb.results import BohbResult, TrialRecord, select_incumbent
from automl_pipeline.darts import DartsConfig, DartsResult
from automl_pipeline.delivery import Candidate
from automl_pipeline.errors import InputError
from automl_pipeline.search_options import SearchOptions
from automl_pipeline.search_space import Genotype
from submission import atomic_write_bytes, to_jsonable, write_json

FORMAT_VERSION = 1
# Settings whose change makes earlier results meaningless; a resume that changes one is refused.
FINGERPRINT_KEYS = ("data", "method", "seed", "image_side_cap", "search")
# Config ids of kept BOHB trials are (attempt * ID_STRIDE + iteration, stage, index): unique across attempts.
ID_STRIDE = 100_000


def save_tensors(path: Path, obj: dict) -> None:
    """torch.save `obj` (tensors and plain Python values only) to `path` atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_tensors(path: Path) -> dict:
    """Read a file written by save_tensors, with weights_only=True, onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def data_signature(data_dir: Path | None) -> dict:
    """What identifies the data source cheaply: its absolute path, and the names and sizes of its
    top-level entries (file: its size). The splits check (splits.json) catches the rest."""
    if data_dir is None:
        return {"path": None}
    path = Path(data_dir).expanduser().absolute()
    if path.is_file():
        return {"path": str(path), "size": path.stat().st_size}
    entries = []
    if path.is_dir():
        for child in sorted(path.iterdir()):
            entries.append([child.name, child.stat().st_size if child.is_file() else -1])
    digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]
    return {"path": str(path), "entries": len(entries), "digest": digest}


def fingerprint(*, data_dir: Path | None, method: str, seed: int, image_side_cap: int,
                search: dict | None = None) -> dict:
    """What a resumed run must share with the killed one (search: SearchOptions.to_json(), default the full method)."""
    return {"data": data_signature(data_dir), "method": method, "seed": int(seed),
            "image_side_cap": int(image_side_cap), "search": SearchOptions.from_json(search or {}).to_json()}


def sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


class Checkpoints:
    """The checkpoint folder of one output directory (see the module docstring)."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.dir = self.out_dir / "checkpoints"
        self.attempt = 0

    # ------------------------------------------------------------------ run.json
    def start(self, fp: dict, *, resume: bool) -> dict | None:
        """Begin attempt 0 (fresh; earlier checkpoints and bohb logs in OUT are removed) or, with
        `resume`, the next attempt of the run in run.json. Returns the earlier run.json on resume.

        Raises InputError (exit code 2) when there is nothing to resume or the fingerprint differs.
        """
        run_json = self.dir / "run.json"
        if not resume:
            if self.dir.exists():
                shutil.rmtree(self.dir)
            for name in ("configs.json", "results.json", "incumbent.json"):
                (self.out_dir / "bohb" / name).unlink(missing_ok=True)
            self.dir.mkdir(parents=True)
            self.attempt = 0
            write_json(run_json, {"version": FORMAT_VERSION, "fingerprint": fp, "attempt": 0})
            return None
        try:
            previous = json.loads(run_json.read_text())
        except FileNotFoundError:
            raise InputError(run_json, "nothing to resume: no checkpoint of an earlier run in this output "
                                       "directory (run without --resume to start afresh)") from None
        except (OSError, ValueError) as err:
            raise InputError(run_json, f"cannot resume: unreadable checkpoint ({err})") from None
        old = previous.get("fingerprint") or {}
        changed = [k for k in FINGERPRINT_KEYS if old.get(k) != fp.get(k)]
        if previous.get("version") != FORMAT_VERSION or changed:
            what = "; ".join(f"{k} was {old.get(k)!r}, now {fp.get(k)!r}" for k in changed) or "format version"
            raise InputError(run_json, f"cannot resume: this run differs from the one that wrote the checkpoint "
                                       f"({what}); use the same settings or another --output-dir")
        self.attempt = int(previous.get("attempt", 0)) + 1
        write_json(run_json, {"version": FORMAT_VERSION, "fingerprint": fp, "attempt": self.attempt})
        return previous

    # ------------------------------------------------------------------ splits
    def check_splits(self, splits_json: dict) -> None:
        """On resume: the recomputed splits must equal OUT/splits.json (else InputError)."""
        path = self.out_dir / "splits.json"
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise InputError(path, f"cannot resume: the splits of the earlier run are unreadable ({err})") from None
        if json.loads(json.dumps(splits_json)) != stored:
            raise InputError(path, "cannot resume: the recomputed splits differ from the earlier run's "
                                   "(the data changed?); use another --output-dir")

    # ------------------------------------------------------------------ delivery
    def save_delivered(self, candidate: Candidate) -> None:
        """After a delivery: what was delivered, so a resumed run only replaces it with a better model."""
        write_json(self.dir / "delivered.json", {
            "source": candidate.source, "description": candidate.description,
            "train_images_per_s": candidate.train_images_per_s, "val_macro_f1": candidate.val_macro_f1,
            "architecture": candidate.architecture, "config": candidate.config, "epochs": candidate.epochs,
            "train_s": candidate.train_s, "trained": candidate.state_dict is not None,
            "predict_labels": np.asarray(candidate.predict_labels, dtype=np.int64).tolist(),
            "heldout_predictions": np.asarray(candidate.heldout_predictions, dtype=np.int64).tolist(),
            "predictions_sha256": sha256_file(self.out_dir / "predictions.npy")})

    def load_delivered(self, n_predict: int, n_heldout: int) -> tuple[Candidate | None, bool, str]:
        """(the delivered candidate, whether its files must be re-written, a note) or (None, False, why).

        The predictions on disk are checked against the recorded sha256: a kill between writing
        predictions.npy and delivered.json leaves a mismatch; then the recorded candidate's
        predictions are re-written (the caller delivers them again), so files and record agree.
        """
        path = self.dir / "delivered.json"
        try:
            d = json.loads(path.read_text())
            candidate = Candidate(source=str(d["source"]), val_macro_f1=float(d["val_macro_f1"]),
                                  predict_labels=np.asarray(d["predict_labels"], dtype=np.int64),
                                  heldout_predictions=np.asarray(d["heldout_predictions"], dtype=np.int64),
                                  architecture=d.get("architecture"), config=d.get("config"),
                                  epochs=int(d.get("epochs", 0)), train_s=float(d.get("train_s", 0.0)),
                                  description=str(d.get("description", "")),
                                  train_images_per_s=float(d.get("train_images_per_s", 0.0)))
        except FileNotFoundError:
            return None, False, "no delivered model recorded"
        except (OSError, ValueError, KeyError, TypeError) as err:
            return None, False, f"{path} unreadable ({err})"
        if len(candidate.predict_labels) != n_predict or len(candidate.heldout_predictions) != n_heldout:
            return None, False, f"{path} does not fit the data"
        on_disk = sha256_file(self.out_dir / "predictions.npy")
        if on_disk != d.get("predictions_sha256"):
            return candidate, True, "predictions.npy did not match delivered.json; re-written from it"
        return candidate, False, f"kept {candidate.name} (val macro-F1 {candidate.val_macro_f1:.4f})"

    # ------------------------------------------------------------------ DARTS
    def save_darts_progress(self, state: dict, meta: dict) -> None:
        save_tensors(self.dir / "darts.pt", {"version": FORMAT_VERSION, "meta": meta, "state": state})

    def load_darts_progress(self) -> dict | None:
        """{"meta", "state"} of the last finished DARTS epoch, or None (missing or unreadable)."""
        try:
            payload = load_tensors(self.dir / "darts.pt")
        except FileNotFoundError:
            return None
        except Exception:   # noqa: BLE001 - a damaged checkpoint means starting DARTS afresh
            return None
        if not isinstance(payload, dict) or payload.get("version") != FORMAT_VERSION:
            return None
        return payload

    def save_darts_outcome(self, result: DartsResult | None, why_not: str) -> None:
        write_json(self.dir / "darts_outcome.json",
                   {"skipped": why_not} if result is None else {"result": result.report()})

    def load_darts_outcome(self) -> tuple[DartsResult | None, str] | None:
        """(result, "") or (None, why it was skipped) of an earlier attempt; None when it never ended."""
        try:
            d = json.loads((self.dir / "darts_outcome.json").read_text())
        except (OSError, ValueError):
            return None
        if "result" in d:
            return darts_result_from_report(d["result"]), ""
        return None, str(d.get("skipped", "skipped"))

    # ------------------------------------------------------------------ BOHB
    def archive_bohb(self) -> int:
        """Move the trials in OUT/bohb (written by the killed attempt) into bohb_kept.json, once.

        Returns the number of kept finished trials over all earlier attempts. A line cut short by
        the kill, or a result whose configuration line is missing, is dropped.
        """
        kept = self._read_kept()
        configs = _json_lines(self.out_dir / "bohb" / "configs.json")
        known = {json.dumps(c[0]) for c in configs if isinstance(c, list) and len(c) >= 2}
        results = [r for r in _json_lines(self.out_dir / "bohb" / "results.json")
                   if isinstance(r, list) and len(r) == 5 and json.dumps(r[0]) in known]
        seen = {_key(r) for batch in kept for r in batch["results"]}
        if results and not all(_key(r) in seen for r in results):
            kept.append({"configs": configs, "results": results})
            write_json(self.dir / "bohb_kept.json", {"batches": kept})
        return sum(len(b["results"]) for b in kept)

    def kept_trials(self) -> list[TrialRecord]:
        """The kept trials as TrialRecords (ids made unique per batch), for the report and incumbent."""
        records: list[TrialRecord] = []
        for b, batch in enumerate(self._read_kept()):
            configs = {json.dumps(c[0]): c for c in batch["configs"]}
            for config_id, budget, stamps, result, exception in batch["results"]:
                config_line = configs[json.dumps(config_id)]
                config_info = config_line[2] if len(config_line) > 2 and isinstance(config_line[2], dict) else {}
                records.append(TrialRecord.from_hpbandster(
                    _unique_id(b, config_id), config_line[1], budget, result, exception, config_info=config_info,
                    t_s=-1.0))                     # before any trial of this attempt (t_s >= 0)
        return records

    def previous_bohb_dir(self, valid: Callable[[dict], bool]) -> Path | None:
        """Write the kept finished trials as an hpbandster log for `run_bohb(previous_result=...)`.

        Only trials with a finite loss whose configuration is `valid` in the current space are
        written (hpbandster's warm start cannot take crashed runs or foreign configurations).
        None when no trial qualifies.
        """
        config_lines, result_lines = [], []
        for b, batch in enumerate(self._read_kept()):
            configs = {json.dumps(c[0]): c for c in batch["configs"]}
            used = set()
            for config_id, budget, stamps, result, exception in batch["results"]:
                line = configs[json.dumps(config_id)]
                loss = (result or {}).get("loss")
                if not (isinstance(loss, (int, float)) and math.isfinite(loss)) or not valid(line[1]):
                    continue
                new_id = list(_unique_id(b, config_id))
                if json.dumps(config_id) not in used:
                    used.add(json.dumps(config_id))
                    config_lines.append([new_id, line[1], line[2] if len(line) > 2 else {}])
                result_lines.append([new_id, budget, stamps, result, exception])
        if not result_lines:
            return None
        target = self.dir / "bohb_previous"
        target.mkdir(parents=True, exist_ok=True)
        for name, lines in (("configs.json", config_lines), ("results.json", result_lines)):
            text = "".join(json.dumps(to_jsonable(line)) + "\n" for line in lines)
            atomic_write_bytes(target / name, text.encode())
        return target

    def _read_kept(self) -> list[dict]:
        try:
            return list(json.loads((self.dir / "bohb_kept.json").read_text())["batches"])
        except (OSError, ValueError, KeyError):
            return []


def merge_kept_trials(result: BohbResult | None, kept: list[TrialRecord]) -> BohbResult | None:
    """BohbResult over the kept trials of earlier attempts plus this attempt's (incumbent re-chosen
    by the same rule). Without a result of this attempt (BOHB skipped), one over the kept trials."""
    if not kept:
        return result
    if result is None:
        budgets = sorted({t.budget for t in kept})
        result = BohbResult(incumbent_config=None, incumbent_val_macro_f1=0.0, incumbent_budget=0.0,
                            min_budget=budgets[0], max_budget=max(budgets[-1], budgets[0] * 3), eta=3.0, trials=[],
                            configs_sampled=0, model_based_picks=0, model_min_trials=0, trajectory=[],
                            seconds=0.0, n_workers=0, clean_shutdown=True)
    trials = list(kept) + list(result.trials)
    incumbent = select_incumbent(trials)
    return replace(result, trials=trials,
                   incumbent_config=None if incumbent is None else incumbent.config,
                   incumbent_val_macro_f1=0.0 if incumbent is None else incumbent.val_macro_f1,
                   incumbent_budget=0.0 if incumbent is None else incumbent.budget)


def darts_result_from_report(d: dict) -> DartsResult:
    """Inverse of DartsResult.report() (the fields a later phase uses)."""
    config = None if d.get("config") is None else DartsConfig.from_json(d["config"])
    return DartsResult(
        genotype=Genotype.from_json(d["genotype"]), alphas_normal=np.asarray(d["alphas_normal"], dtype=np.float64),
        alphas_reduce=np.asarray(d["alphas_reduce"], dtype=np.float64), epochs_planned=int(d["epochs_planned"]),
        epochs_run=int(d["epochs_run"]), stopped_early=bool(d["stopped_early"]), stop_reason=str(d["stop_reason"]),
        skip_count_per_epoch=list(d["skip_count_per_epoch"]), beta_per_epoch=list(d["beta_per_epoch"]),
        alphas_per_epoch=list(d["alphas_per_epoch"]), seconds=float(d["seconds"]),
        epoch_seconds=list(d["epoch_seconds"]), ops=tuple(d["ops"]), steps_run=int(d.get("steps_run", 0)),
        history=list(d.get("history", [])), config=config)


def _json_lines(path: Path) -> list:
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:       # the last line, cut by the kill
            continue
    return out


def _key(result_line: list) -> str:
    return json.dumps(to_jsonable(result_line), sort_keys=True)


def _unique_id(batch: int, config_id) -> tuple:
    ids = [int(v) for v in config_id]
    return (ids[0] - (batch + 1) * ID_STRIDE, *ids[1:])


def config_fits(space, config: dict) -> bool:
    """True when `config` is a valid configuration of the ConfigSpace `space`."""
    import ConfigSpace

    try:
        ConfigSpace.Configuration(space, values=config)
    except Exception:   # noqa: BLE001 - ConfigSpace raises several types for a foreign configuration
        return False
    return True
