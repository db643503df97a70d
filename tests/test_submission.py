"""Atomic writes, predictions files, model file round-trip and output-dir checks."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import submission
from submission import (OutputDirError, atomic_write_bytes, check_output_dir, load_model_file, write_json,
                        write_model, write_predictions)


def leftover_temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".write_probe")]


# -- atomic writes ---------------------------------------------------------------------

def test_atomic_write_replaces_content_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert leftover_temp_files(tmp_path) == []
    assert target.stat().st_mode & 0o777 == 0o644


def test_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    target = tmp_path / "predictions.csv"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert leftover_temp_files(tmp_path) == []


def test_write_json_converts_numpy_and_non_finite_values(tmp_path):
    target = tmp_path / "report.json"
    write_json(target, {
        "f1": np.float32(0.5), "n": np.int64(3), "flag": np.bool_(True),
        "matrix": np.arange(4).reshape(2, 2), "bad": float("nan"), "inf": np.float64("inf"),
        np.int64(7): "numpy key", "nested": ({"x": (1, 2)},), "path": Path("a/b"),
    })
    loaded = json.loads(target.read_text())
    assert loaded == {"f1": 0.5, "n": 3, "flag": True, "matrix": [[0, 1], [2, 3]], "bad": None, "inf": None,
                      "7": "numpy key", "nested": [{"x": [1, 2]}], "path": "a/b"}
    assert "NaN" not in target.read_text()


def test_write_json_rejects_unknown_objects_without_touching_the_file(tmp_path):
    target = tmp_path / "report.json"
    write_json(target, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}


# -- predictions -----------------------------------------------------------------------

def test_predictions_files_hold_indices_and_class_names_in_order(tmp_path):
    ids = ["img_003.png", "img_001.png", "odd,name.png"]
    write_predictions(tmp_path / "out", np.array([2, 0, 1], dtype=np.int32), ids, ["cat", "dog", "eel"])
    saved = np.load(tmp_path / "out" / "predictions.npy")
    assert saved.dtype == np.int64
    assert saved.tolist() == [2, 0, 1]
    with open(tmp_path / "out" / "predictions.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["image_file_name", "label"], ["img_003.png", "eel"], ["img_001.png", "cat"],
                    ["odd,name.png", "dog"]]
    assert (tmp_path / "out" / "predictions.csv").read_text().startswith("image_file_name,label\n")


def test_predictions_are_replaced_by_better_ones(tmp_path):
    write_predictions(tmp_path, np.array([0, 0]), ["a", "b"], ["x", "y"])
    write_predictions(tmp_path, np.array([1, 0]), ["a", "b"], ["x", "y"])
    assert np.load(tmp_path / "predictions.npy").tolist() == [1, 0]
    assert leftover_temp_files(tmp_path) == []


@pytest.mark.parametrize("predictions, ids, message", [
    (np.array([0, 1]), ["a"], "2 predictions but 1 ids"),
    (np.array([0, 3]), ["a", "b"], "outside"),
    (np.array([-1, 0]), ["a", "b"], "outside"),
    (np.array([0.0, 1.0]), ["a", "b"], "integer"),
    (np.array([[0], [1]]), ["a", "b"], "1-D"),
])
def test_invalid_predictions_raise_and_write_nothing(tmp_path, predictions, ids, message):
    with pytest.raises(ValueError, match=message):
        write_predictions(tmp_path, predictions, ids, ["x", "y", "z"])
    assert list(tmp_path.iterdir()) == []


# -- model file ------------------------------------------------------------------------

def test_model_file_round_trips_with_weights_only(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
    spec = {"genotype": {"normal": [["conv_3x3", 0], ["skip_connect", 1]]}, "n_cells": np.int64(3)}
    config = {"lr": np.float64(0.003), "optimizer": "adamw", "head_hidden": (64, 32, 16)}
    write_model(tmp_path, model.state_dict(), spec, config)

    raw = torch.load(tmp_path / "model.pt", weights_only=True)     # the contract, not just our loader
    assert set(raw) == {"state_dict", "spec", "config"}
    loaded = load_model_file(tmp_path / "model.pt")
    assert loaded["spec"] == {"genotype": {"normal": [["conv_3x3", 0], ["skip_connect", 1]]}, "n_cells": 3}
    assert loaded["config"] == {"lr": 0.003, "optimizer": "adamw", "head_hidden": [64, 32, 16]}
    fresh = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
    fresh.load_state_dict(loaded["state_dict"])
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_model_file_rejects_non_tensor_state(tmp_path):
    with pytest.raises(TypeError, match="weight"):
        write_model(tmp_path, {"weight": np.zeros(3)}, {}, {})
    assert not (tmp_path / "model.pt").exists()


def test_load_model_file_rejects_other_files(tmp_path):
    torch.save({"just": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a model file"):
        load_model_file(tmp_path / "other.pt")


# -- output directory ------------------------------------------------------------------

def test_check_output_dir_creates_nested_directories(tmp_path):
    created = check_output_dir(tmp_path / "a" / "b")
    assert created == (tmp_path / "a" / "b").absolute()
    assert created.is_dir()
    assert leftover_temp_files(created) == []


def test_check_output_dir_rejects_a_regular_file(tmp_path):
    occupied = tmp_path / "taken"
    occupied.write_text("x")
    with pytest.raises(OutputDirError) as info:
        check_output_dir(occupied)
    assert str(info.value) == f"{occupied}: exists and is not a directory"
    assert info.value.exit_code == 2


def test_check_output_dir_rejects_a_path_below_a_regular_file(tmp_path):
    occupied = tmp_path / "taken"
    occupied.write_text("x")
    with pytest.raises(OutputDirError, match="cannot create directory"):
        check_output_dir(occupied / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o500")
def test_check_output_dir_rejects_a_read_only_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputDirError, match="not writable"):
            check_output_dir(locked)
    finally:
        locked.chmod(0o700)


def test_public_names_are_exported():
    assert {"atomic_write_bytes", "write_json", "write_predictions", "write_model", "load_model_file",
            "check_output_dir", "OutputDirError"} <= set(submission.__all__)


def test_check_output_dir_reports_a_failed_probe_write(tmp_path, monkeypatch):
    """Runs as root too: the probe write itself is made to fail (as on a read-only mount)."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OutputDirError, match=r"not writable \(Permission denied\)"):
        check_output_dir(tmp_path)
