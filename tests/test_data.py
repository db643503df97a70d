"""The data layer: every format loads to the same contract, bad input fails with
an InputError naming the file, and splits are stratified, disjoint and seeded."""
from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automl_pipeline.data import (HELDOUT_CARVED, HELDOUT_FROM_DATA, Dataset, ImageSet, load_dataset,
                                  make_splits, working_side)
from automl_pipeline.errors import InputError
from data_builders import make_competition, make_imagefolder, make_npz, pattern_image, write_image

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- errors

def test_input_error_message_exit_code_and_pickling():
    error = InputError(Path("/data/x.png"), "cannot decode image: truncated")
    assert str(error) == "/data/x.png: cannot decode image: truncated"
    assert error.exit_code == 2
    clone = pickle.loads(pickle.dumps(error))
    assert str(clone) == str(error) and clone.path == "/data/x.png"


def test_data_package_does_not_import_torch():
    code = "import sys, automl_pipeline.data; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- every format, one contract

FORMATS = {
    "npz-grey": (lambda d: make_npz(d), "npz", 1),
    "npz-rgb": (lambda d: make_npz(d, rgb=True), "npz", 3),
    "npz-file-path": (lambda d: make_npz(d) / "data.npz", "npz", 1),
    "competition-grey": (lambda d: make_competition(d), "competition", 1),
    "competition-rgb-labelled-test": (lambda d: make_competition(d, rgb=True, labelled_test=True), "competition", 3),
    "imagefolder-flat": (lambda d: make_imagefolder(d), "imagefolder", 1),
    "imagefolder-nested-rgb-jpg": (lambda d: make_imagefolder(d, nested=True, rgb=True, ext="jpg"),
                                   "imagefolder", 3),
    "digits": (lambda d: None, "digits", 1),
}


def check_contract(dataset: Dataset) -> None:
    height, width, channels = dataset.image_shape
    assert channels in (1, 3) and height == width
    for image_set in (dataset.train, dataset.val, dataset.test):
        if image_set is None:
            continue
        assert image_set.images.dtype == np.uint8 and image_set.images.shape[1:] == dataset.image_shape
        assert len(image_set.ids) == len(image_set) == len(set(image_set.ids))
        if image_set.labels is not None:
            assert image_set.labels.dtype == np.int64
            assert 0 <= image_set.labels.min() and image_set.labels.max() < dataset.n_classes
    assert set(dataset.train.labels.tolist()) == set(range(dataset.n_classes))


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_loads_to_the_contract(tmp_path, name):
    build, fmt, channels = FORMATS[name]
    dataset = load_dataset(build(tmp_path / "data"), max_side=16)
    check_contract(dataset)
    assert dataset.format == fmt
    assert dataset.image_shape[2] == channels
    splits = make_splits(dataset, seed=0)
    assert len(splits.train) and len(splits.val) and len(splits.test) and len(splits.predict)


def test_npz_details_class_names_and_splits(tmp_path):
    make_npz(tmp_path, n_per_class=6, n_classes=4, side=10)
    with np.load(tmp_path / "data.npz", allow_pickle=False) as archive:
        arrays = dict(archive)
    arrays["class_names"] = np.array(["a", "b", "c", "d"])
    np.savez(tmp_path / "data.npz", **arrays)
    dataset = load_dataset(tmp_path, max_side=64)
    assert dataset.class_names == ("a", "b", "c", "d")
    assert dataset.native_side == 10 and dataset.image_shape == (10, 10, 1)
    assert dataset.train.ids[:2] == ("train/0", "train/1")
    np.testing.assert_array_equal(dataset.train.labels, arrays["train_labels"][:, 0])
    np.testing.assert_array_equal(dataset.test.images[..., 0], arrays["test_images"])


def test_npz_large_images_are_resized_and_noted(tmp_path):
    dataset = load_dataset(make_npz(tmp_path, side=40, rgb=True), max_side=16)
    assert dataset.image_shape == (16, 16, 3) and dataset.native_side == 40
    assert any("resized train images from 40x40 to 16x16" in note for note in dataset.notes)


def test_npz_float_images_in_range_are_accepted_and_out_of_range_refused(tmp_path):
    labels = np.array([0, 1, 0, 1])
    np.savez(tmp_path / "ok.npz", train_images=np.full((4, 5, 5), 200.0), train_labels=labels)
    dataset = load_dataset(tmp_path / "ok.npz", max_side=8)
    assert dataset.train.images.dtype == np.uint8 and (dataset.train.images == 200).all()
    np.savez(tmp_path / "bad.npz", train_images=np.full((4, 5, 5), 300.0), train_labels=labels)
    with pytest.raises(InputError, match=r"bad\.npz: train_images values span 300.0\.\.300\.0"):
        load_dataset(tmp_path / "bad.npz", max_side=8)


def test_mixed_sizes_are_resized_to_the_median_side(tmp_path):
    data = make_imagefolder(tmp_path, side=12, mixed_sizes=True)
    longest = [max(Image.open(p).size) for p in sorted(data.glob("*/*.png"))]
    dataset = load_dataset(data, max_side=64)
    assert dataset.native_side == int(round(np.median(longest)))
    side = working_side(dataset.native_side, 64)
    assert dataset.image_shape == (side, side, 1)
    assert any("stretched (aspect ratio not kept)" in note for note in dataset.notes)


def test_large_images_are_resized_to_max_side(tmp_path):
    dataset = load_dataset(make_competition(tmp_path, side=48), max_side=16)
    assert dataset.native_side == 48 and dataset.image_shape == (16, 16, 1)
    assert dataset.test.images.shape[1:] == (16, 16, 1)


@pytest.mark.parametrize("native, max_side, expected", [(28, 64, 28), (224, 64, 64), (64, 64, 64), (8, 2, 2)])
def test_working_side_rule(native, max_side, expected):
    assert working_side(native, max_side) == expected


def test_modes_are_converted_to_rgb_when_any_image_is_colour(tmp_path):
    rng = np.random.default_rng(0)
    for label, modes in enumerate((("L", "RGBA", "P"), ("LA", "CMYK", "RGB"))):
        folder = tmp_path / f"class{label}"
        folder.mkdir()
        for i, mode in enumerate(modes):
            pixels = pattern_image(label, 2, rng, height=8, width=8, rgb=True)
            suffix = "jpg" if mode == "CMYK" else "png"
            write_image(folder / f"{i}.{suffix}", pixels, mode=mode)
    dataset = load_dataset(tmp_path, max_side=8)
    assert dataset.image_shape == (8, 8, 3)
    notes = " | ".join(dataset.notes)
    for expected in ("converted 1 RGBA image to RGB", "converted 1 P image to RGB", "converted 1 CMYK image to RGB",
                     "converted 1 L image to RGB"):
        assert expected in notes


def test_all_grey_modes_stay_single_channel_and_16_bit_is_scaled(tmp_path):
    for label in range(2):
        (tmp_path / f"class{label}").mkdir()
    deep = np.full((6, 6), 257 * 100, dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "class0" / "deep.png")
    assert Image.open(tmp_path / "class0" / "deep.png").mode.startswith("I")
    write_image(tmp_path / "class0" / "plain.png", np.full((6, 6), 7, dtype=np.uint8))
    write_image(tmp_path / "class1" / "alpha.png", np.full((6, 6), 50, dtype=np.uint8), mode="LA")
    write_image(tmp_path / "class1" / "bits.png", np.full((6, 6), 255, dtype=np.uint8), mode="1")
    dataset = load_dataset(tmp_path, max_side=6)
    assert dataset.image_shape == (6, 6, 1)
    by_id = dict(zip(dataset.train.ids, dataset.train.images))
    assert (by_id["class0/deep.png"] == 100).all() and (by_id["class0/plain.png"] == 7).all()
    assert (by_id["class1/alpha.png"] == 50).all() and (by_id["class1/bits.png"] == 255).all()
    assert any(note.startswith("scaled 1 I;16") for note in dataset.notes)


def test_competition_class_names_extra_columns_and_unlabelled_test(tmp_path):
    make_competition(tmp_path, n_classes=3)
    (tmp_path / "classes.txt").write_text("ant\nbee\ncat\n")
    lines = (tmp_path / "train.csv").read_text().splitlines()
    (tmp_path / "train.csv").write_text("\n".join(f"{line},extra" for line in lines) + "\n")
    (tmp_path / "train.csv").write_text((tmp_path / "train.csv").read_text().replace("label,extra", "label,notes", 1))
    dataset = load_dataset(tmp_path, max_side=16)
    assert dataset.class_names == ("ant", "bee", "cat")
    assert dataset.test is not None and dataset.test.labels is None
    assert any("ignored extra column(s) ['notes']" in note for note in dataset.notes)


def test_test_csv_without_label_column_is_an_unlabelled_test(tmp_path):
    make_competition(tmp_path, labelled_test=True)
    lines = (tmp_path / "test.csv").read_text().splitlines()
    (tmp_path / "test.csv").write_text("\n".join(line.split(",")[0] for line in lines) + "\n")
    dataset = load_dataset(tmp_path, max_side=16)
    assert dataset.test.labels is None and len(dataset.test) == 9


def test_imagefolder_skips_non_image_files_with_a_note(tmp_path):
    make_imagefolder(tmp_path, n_classes=2)
    (tmp_path / "class0" / "notes.txt").write_text("hello")
    (tmp_path / "class1" / ".DS_Store").write_bytes(b"\0\1")
    dataset = load_dataset(tmp_path, max_side=16)
    assert len(dataset.train) == 20
    assert "skipped non-image file class0/notes.txt" in dataset.notes
    assert not any("DS_Store" in note for note in dataset.notes)


def test_imagefolder_accepts_upper_case_extensions(tmp_path):
    make_imagefolder(tmp_path, n_classes=2, ext="PNG")
    assert len(load_dataset(tmp_path, max_side=16).train) == 20


# ---------------------------------------------------------------- the bad-input catalogue

def png_bytes(side: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(side: int = 64) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def rewrite_csv(path: Path, line: int, new_text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = new_text
    path.write_text("\n".join(lines) + "\n")


def csv_line(path: Path, line: int) -> str:
    return path.read_text().splitlines()[line - 1]


def bad_missing_dir(d):
    return d / "nope", ["nope", "does not exist"]


def bad_empty_dir(d):
    d.mkdir()
    return d, ["data directory is empty"]


def bad_unrecognised_layout(d):
    d.mkdir()
    (d / "readme.txt").write_text("hi")
    return d, ["no recognised dataset layout", ".npz"]


def bad_corrupt_png(d):
    make_imagefolder(d, n_classes=2)
    (d / "class1" / "broken.png").write_bytes(b"this is not a png")
    return d, ["broken.png", "cannot decode image"]


def bad_truncated_png(d):
    make_imagefolder(d, n_classes=2)
    (d / "class0" / "cut.png").write_bytes(png_bytes()[:300])
    return d, ["cut.png", "cannot decode image"]


def bad_truncated_jpeg(d):
    make_imagefolder(d, n_classes=2)
    (d / "class0" / "cut.jpg").write_bytes(jpeg_bytes()[:600])
    return d, ["cut.jpg", "cannot decode image"]


def bad_csv_missing_file(d):
    make_competition(d)
    name = csv_line(d / "train.csv", 3).split(",")[0]
    (d / "images_train" / name).unlink()
    return d, ["train.csv", "line 3", name, "not found"]


def bad_label_cat(d):
    make_competition(d)
    name = csv_line(d / "train.csv", 4).split(",")[0]
    rewrite_csv(d / "train.csv", 4, f"{name},cat")
    return d, ["train.csv", "line 4", "'cat' is not an integer"]


def bad_label_out_of_range(d):
    make_competition(d, n_classes=3)
    (d / "classes.txt").write_text("a\nb\nc\n")
    name = csv_line(d / "train.csv", 2).split(",")[0]
    rewrite_csv(d / "train.csv", 2, f"{name},3")
    return d, ["train.csv", "line 2", "label 3 is out of range"]


def bad_label_negative(d):
    make_competition(d)
    name = csv_line(d / "train.csv", 5).split(",")[0]
    rewrite_csv(d / "train.csv", 5, f"{name},-1")
    return d, ["train.csv", "line 5", "negative"]


def bad_nan_train_label(d):
    make_competition(d)
    name = csv_line(d / "train.csv", 6).split(",")[0]
    rewrite_csv(d / "train.csv", 6, f"{name},NaN")
    return d, ["train.csv", "line 6", "missing"]


def bad_partly_empty_test_labels(d):
    make_competition(d, labelled_test=True)
    name = csv_line(d / "test.csv", 2).split(",")[0]
    rewrite_csv(d / "test.csv", 2, f"{name},")
    return d, ["test.csv", "missing on 1 of 9 rows", "line 2"]


def bad_duplicate_file_names(d):
    make_competition(d)
    rewrite_csv(d / "train.csv", 5, csv_line(d / "train.csv", 2))
    return d, ["train.csv", "line 5", "duplicate file name"]


def bad_csv_without_label_column(d):
    make_competition(d)
    text = (d / "train.csv").read_text().replace("image_file_name,label", "image_file_name,target", 1)
    (d / "train.csv").write_text(text)
    return d, ["train.csv", "missing required column(s) ['label']"]


def bad_csv_without_rows(d):
    make_competition(d)
    (d / "train.csv").write_text("image_file_name,label\n")
    return d, ["train.csv", "no rows"]


def bad_one_class_only(d):
    make_imagefolder(d, n_classes=1)
    return d, [str(d), "found 1 class(es)", "need at least 2"]


def bad_one_class_npz(d):
    d.mkdir()
    np.savez(d / "one.npz", train_images=np.zeros((4, 5, 5), np.uint8), train_labels=np.zeros(4, np.int64))
    return d, ["one.npz", "need at least 2"]


def bad_every_class_has_one_image(d):
    make_imagefolder(d, n_classes=3, n_per_class=1)
    return d, [str(d), "every class has only 1 training image", "'class0', 'class1', 'class2'",
               "at least one class needs 2"]


def bad_empty_class_folder(d):
    make_imagefolder(d, n_classes=2)
    (d / "class_empty").mkdir()
    (d / "class_empty" / ".hidden").write_text("")
    return d, ["class_empty", "no image files"]


def bad_npz_wrong_keys(d):
    d.mkdir()
    np.savez(d / "keys.npz", x_train=np.zeros((4, 5, 5), np.uint8), y_train=np.arange(4) % 2)
    return d, ["keys.npz", "missing keys ['train_images', 'train_labels']"]


def bad_npz_count_mismatch(d):
    d.mkdir()
    np.savez(d / "count.npz", train_images=np.zeros((5, 6, 6), np.uint8), train_labels=np.array([0, 1, 0, 1]))
    return d, ["count.npz", "5 images but train_labels has 4 labels"]


def bad_npz_wrong_ndim(d):
    d.mkdir()
    np.savez(d / "flat.npz", train_images=np.zeros((4, 36), np.uint8), train_labels=np.array([0, 1, 0, 1]))
    return d, ["flat.npz", "shape (4, 36)", "expected (N, H, W)"]


def bad_npz_class_missing_from_train(d):
    d.mkdir()
    np.savez(d / "gap.npz", train_images=np.zeros((4, 6, 6), np.uint8), train_labels=np.array([0, 2, 0, 2]))
    return d, ["gap.npz", "class '1' (label 1) has no training images"]


def bad_npz_label_far_beyond_the_others(d):
    """Labels 0, 1 and 10**6: a short message (at most checks.MAX_NAMED classes named), not megabytes."""
    d.mkdir()
    np.savez(d / "far.npz", train_images=np.zeros((6, 6, 6), np.uint8), train_labels=np.array([0, 1, 0, 1, 10**6, 1]))
    return d, ["far.npz", "class '2' (label 2), '3' (label 3)", "'11' (label 11) and 999988 more of the 1000001",
               "has no training images"]


def bad_two_npz_files(d):
    make_npz(d)
    make_npz(d, name="other.npz")
    return d, ["2 .npz files", "expected exactly one"]


def bad_not_an_npz_file(d):
    d.mkdir()
    (d / "data.npz").write_bytes(b"garbage")
    return d / "data.npz", ["data.npz", "cannot read npz file"]


BAD_INPUTS = [value for key, value in sorted(globals().items()) if key.startswith("bad_")]


@pytest.mark.parametrize("make_bad", BAD_INPUTS, ids=[f.__name__[4:] for f in BAD_INPUTS])
def test_bad_input_raises_input_error_naming_the_problem(tmp_path, make_bad):
    path, expected_parts = make_bad(tmp_path / "data")
    with pytest.raises(InputError) as caught:
        load_dataset(path, max_side=16)
    message = str(caught.value)
    for part in expected_parts:
        assert part in message, f"{part!r} not in {message!r}"
    assert len(message) < 2000, message[:300]


def test_npz_object_arrays_are_refused_without_unpickling(tmp_path, monkeypatch):
    labels = np.empty(4, dtype=object)
    labels[:] = [0, 1, 0, 1]
    np.savez(tmp_path / "obj.npz", train_images=np.zeros((4, 5, 5), np.uint8), train_labels=labels)

    def refuse(*args, **kwargs):
        raise AssertionError("the loader tried to unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    with pytest.raises(InputError, match=r"obj\.npz: key 'train_labels' contains object arrays; refusing to unpickle"):
        load_dataset(tmp_path, max_side=16)


# ---------------------------------------------------------------- splits

def imbalanced_dataset(counts=(60, 25, 9, 2)) -> Dataset:
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    labels = np.random.default_rng(1).permutation(labels)
    images = np.zeros((len(labels), 4, 4, 1), np.uint8)
    train = ImageSet(images, labels, tuple(f"img{i}" for i in range(len(labels))))
    return Dataset("npz", "memory", tuple(map(str, range(len(counts)))), train, None, None, 4)


def test_carved_splits_are_stratified_disjoint_and_complete():
    dataset = imbalanced_dataset()
    splits = make_splits(dataset, seed=3)
    assert splits.heldout_source == HELDOUT_CARVED
    ids = [set(s.ids) for s in (splits.train, splits.val, splits.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert ids[0] | ids[1] | ids[2] == set(dataset.train.ids)
    totals = dataset.train.class_counts(4)
    for image_set, fraction in ((splits.test, 0.2), (splits.val, 0.15)):
        counts = image_set.class_counts(4)
        assert np.all(np.abs(counts[:3] - totals[:3] * fraction) <= 1), counts
    assert splits.train.class_counts(4).min() >= 1
    assert splits.test.class_counts(4).tolist()[3] == 1     # a 2-image class: 1 train, 1 held-out test


def test_splits_are_reproducible_for_a_seed_and_vary_across_seeds():
    dataset = imbalanced_dataset()
    first, again, other = (make_splits(dataset, seed=s) for s in (7, 7, 8))
    assert first.to_json(7) == again.to_json(7)
    assert first.test.ids != other.test.ids
    assert list(first.train.ids) == sorted(first.train.ids, key=dataset.train.ids.index)   # dataset order kept


def test_labelled_test_is_the_heldout_and_val_is_kept(tmp_path):
    dataset = load_dataset(make_npz(tmp_path), max_side=16)
    splits = make_splits(dataset, seed=0)
    assert splits.heldout_source == HELDOUT_FROM_DATA
    assert splits.test.ids == dataset.test.ids and splits.predict.ids == dataset.test.ids
    assert splits.val.ids == dataset.val.ids and splits.train.ids == dataset.train.ids


def test_labelled_test_without_val_carves_val_from_train(tmp_path):
    dataset = load_dataset(make_npz(tmp_path, with_val=False), max_side=16)
    splits = make_splits(dataset, seed=0)
    assert splits.heldout_source == HELDOUT_FROM_DATA and splits.test.ids == dataset.test.ids
    assert set(splits.val.ids) | set(splits.train.ids) == set(dataset.train.ids)
    assert not set(splits.val.ids) & set(splits.train.ids)


def test_predict_order_equals_test_csv_order(tmp_path):
    data = make_competition(tmp_path)
    dataset = load_dataset(data, max_side=16)
    splits = make_splits(dataset, seed=0)
    csv_names = [line.split(",")[0] for line in (data / "test.csv").read_text().splitlines()[1:]]
    assert csv_names != sorted(csv_names)              # the builder shuffles, so order is really tested
    assert list(splits.predict.ids) == csv_names
    assert splits.predict.labels is None and splits.heldout_source == HELDOUT_CARVED
    expected = np.stack([np.asarray(Image.open(data / "images_test" / n)) for n in csv_names])[..., None]
    np.testing.assert_array_equal(splits.predict.images, expected)


def test_a_single_image_class_is_fine_when_nothing_is_carved(tmp_path):
    d = make_imagefolder(tmp_path, nested=True, n_classes=2)
    for path in sorted((d / "train" / "class1").iterdir())[1:]:
        path.unlink()
    splits = make_splits(load_dataset(d, max_side=16), seed=0)
    assert splits.train.class_counts(2).tolist() == [10, 1]


def test_a_single_image_class_is_kept_in_training_only_and_noted():
    dataset = imbalanced_dataset(counts=(12, 1, 7, 1))
    splits = make_splits(dataset, seed=0)
    assert splits.train_only == (1, 3)
    assert splits.train.class_counts(4).tolist()[1::2] == [1, 1]
    assert splits.val.class_counts(4).tolist()[1::2] == [0, 0]
    assert splits.test.class_counts(4).tolist()[1::2] == [0, 0]
    assert splits.test.class_counts(4)[[0, 2]].min() >= 1 and splits.val.class_counts(4)[[0, 2]].min() >= 1
    assert splits.notes == ("2 classes have 1 training image each ('1', '3'): they are kept in training only "
                            "(none carved for the held-out test and validation splits); their held-out test "
                            "scores are absent",)


def test_one_train_only_class_note_names_it(tmp_path):
    d = make_imagefolder(tmp_path, n_classes=3)
    for path in sorted((d / "class2").iterdir())[1:]:
        path.unlink()
    splits = make_splits(load_dataset(d, max_side=16), seed=0)
    assert splits.train_only == (2,)
    assert splits.notes == ("class 'class2' has 1 training image: it is kept in training only (none carved for "
                            "the held-out test and validation splits); its held-out test score is absent",)


def test_a_single_image_class_stays_out_of_carved_val_when_the_data_brings_a_test(tmp_path):
    d = make_imagefolder(tmp_path, nested=True, n_classes=2)
    shutil.rmtree(d / "val")
    for path in sorted((d / "train" / "class1").iterdir())[1:]:
        path.unlink()
    splits = make_splits(load_dataset(d, max_side=16), seed=0)
    assert splits.heldout_source == HELDOUT_FROM_DATA and splits.train_only == (1,)
    assert splits.val.class_counts(2).tolist()[1] == 0 and splits.train.class_counts(2).tolist()[1] == 1
    assert splits.notes[0].endswith("(none carved for the validation split)")   # the data's test scores it


def test_no_train_only_classes_when_nothing_is_carved(tmp_path):
    d = make_imagefolder(tmp_path, nested=True, n_classes=2)
    for path in sorted((d / "train" / "class1").iterdir())[1:]:
        path.unlink()
    splits = make_splits(load_dataset(d, max_side=16), seed=0)
    assert splits.train_only == () and splits.notes == ()


def test_splits_json_has_ids_and_per_class_counts():
    splits = make_splits(imbalanced_dataset(), seed=0)
    report = json.loads(json.dumps(splits.to_json(seed=0)))
    assert report["seed"] == 0 and report["heldout_source"] == HELDOUT_CARVED
    for name in ("train", "val", "test"):
        part = report[name]
        assert part["count"] == len(part["ids"]) == sum(part["per_class"])
        assert len(part["per_class"]) == 4
    assert report["predict"]["ids"] == report["test"]["ids"] and report["predict"]["is_heldout_test"]
