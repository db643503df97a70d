"""What a killed run leaves behind for `--resume`: OUT/checkpoints/.

Files (each written atomically: a reader sees the old file or the new one, never half of one):

| file | written | content |
| --- | --- | --- |
| `run.json` | at start | fingerprint of what the results depend on (data source, method, seed, image side, search options), attempt number |
| `delivered.json` | after every delivery | the delivered candidate: source, val macro-F1, held-out and predict labels, sha256 of predictions.npy |
| phases' files | by the phase that owns them | `save_json` / `save_tensors` / `write_json_lines` of what a phase hands over |

The phases' files, written and read by their own modules: `darts.pt` (the search state after every
DARTS epoch) and `darts_outcome.json` (the DARTS result, or why it was skipped) by
phases/architecture.py; `bohb_kept.json` (the finished BOHB trials of every earlier attempt) and
`bohb_previous/` (those trials as an hpbandster log, to warm-start BOHB) by phases/hyperparameters.py.
This module knows no DARTS or hpbandster format.

Everything is loaded with `torch.load(weights_only=True)` or JSON: no pickle.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from automl_pipeline.delivery import Candidate
from automl_pipeline.errors import InputError
from automl_pipeline.search_options import SearchOptions
from submission import atomic_write_bytes, to_jsonable, write_json

FORMAT_VERSION = 3   # 2: delivered.json has test_predictions (was heldout_predictions); 3: kept BOHB trials carry info["fixed"]
# Settings whose change makes earlier results meaningless; a resume that changes one is refused.
FINGERPRINT_KEYS = ("data", "method", "seed", "image_side_cap", "search")


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
    def start(self, fp: dict, *, resume: bool, stale: tuple[Path, ...] = ()) -> dict | None:
        """Begin attempt 0 (fresh: earlier checkpoints and the `stale` files of an earlier run are
        removed) or, with `resume`, the next attempt of the run in run.json. Returns the earlier
        run.json on resume.

        Raises InputError (exit code 2) when there is nothing to resume or the fingerprint differs.
        """
        run_json = self.dir / "run.json"
        if not resume:
            if self.dir.exists():
                shutil.rmtree(self.dir)
            for path in stale:
                Path(path).unlink(missing_ok=True)
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
            "test_predictions": np.asarray(candidate.test_predictions, dtype=np.int64).tolist(),
            "predictions_sha256": sha256_file(self.out_dir / "predictions.npy")})

    def load_delivered(self, n_predict: int, n_test: int) -> tuple[Candidate | None, bool, str]:
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
                                  test_predictions=np.asarray(d["test_predictions"], dtype=np.int64),
                                  architecture=d.get("architecture"), config=d.get("config"),
                                  epochs=int(d.get("epochs", 0)), train_s=float(d.get("train_s", 0.0)),
                                  description=str(d.get("description", "")),
                                  train_images_per_s=float(d.get("train_images_per_s", 0.0)))
        except FileNotFoundError:
            return None, False, "no delivered model recorded"
        except (OSError, ValueError, KeyError, TypeError) as err:
            return None, False, f"{path} unreadable ({err})"
        if len(candidate.predict_labels) != n_predict or len(candidate.test_predictions) != n_test:
            return None, False, f"{path} does not fit the data"
        on_disk = sha256_file(self.out_dir / "predictions.npy")
        if on_disk != d.get("predictions_sha256"):
            return candidate, True, "predictions.npy did not match delivered.json; re-written from it"
        return candidate, False, f"kept {candidate.name} (val macro-F1 {candidate.val_macro_f1:.4f})"

    # ------------------------------------------------------------------ what the phases hand over
    def path(self, name: str) -> Path:
        """A file of the checkpoint folder."""
        return self.dir / name

    def save_json(self, name: str, obj) -> None:
        write_json(self.path(name), obj)

    def load_json(self, name: str) -> dict | None:
        """A JSON object saved with save_json, or None when missing or unreadable."""
        try:
            obj = json.loads(self.path(name).read_text())
        except (OSError, ValueError):
            return None
        return obj if isinstance(obj, dict) else None

    def save_tensors(self, name: str, obj: dict) -> None:
        save_tensors(self.path(name), {"version": FORMAT_VERSION, **obj})

    def load_tensors(self, name: str) -> dict | None:
        """A dict saved with save_tensors, or None when missing, damaged or of another format version."""
        try:
            payload = load_tensors(self.path(name))
        except Exception:   # noqa: BLE001 - a damaged checkpoint means starting that work afresh
            return None
        if not isinstance(payload, dict) or payload.get("version") != FORMAT_VERSION:
            return None
        return payload

    def write_json_lines(self, name: str, lines: list) -> Path:
        """Write one JSON value per line, atomically (NaN/inf as null)."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, "".join(json.dumps(to_jsonable(line)) + "\n" for line in lines).encode())
        return path
