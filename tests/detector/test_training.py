"""Training, metrics, bundles, self-blended images and the training CLI.

No Django here: the detector is a library. The one real training run uses an Xception
at 71 px (the smallest it accepts) on a few generated faces, so it takes well under a minute.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector import sbi, training
from detector.errors import BundleMismatch
from detector.metrics import binary_metrics, choose_threshold, confusion, roc_auc
from detector.model import ModelBundle
from detector.sbi import landmarks, self_blend, self_blended_set
from detector.training import FaceSet, TrainConfig, ffpp_items, split_of, train
from tests.media import astronaut, moving_frames, write_clip

SIZE = 71  # the smallest input Xception accepts


def astronaut_crops(n: int, size: int, seed: int) -> list[np.ndarray]:
    """Square crops around the astronaut's face (x 175-265, y 75-170), jittered in
    position and scale, so no two training faces are identical."""
    rng = random.Random(seed)
    img = astronaut()
    crops = []
    for _ in range(n):
        side = rng.randint(150, 210)
        cx, cy = 220 + rng.randint(-12, 12), 125 + rng.randint(-12, 12)
        x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
        crop = img[y0 : y0 + side, x0 : x0 + side]
        crops.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    return crops


def faces_with_blends(n: int, seed: int, prefix: str) -> FaceSet:
    """n real crops and their n self-blends; a crop and its blend share a group."""
    real = np.stack(astronaut_crops(n, SIZE, seed))
    groups = np.array([f"{prefix}/{i}" for i in range(n)])
    reals = FaceSet(real, np.zeros(n, int), np.array(["faces:astro"] * n), groups)
    return FaceSet.concat([reals, self_blended_set(reals, seed)])


# ---- metrics ---------------------------------------------------------------------------


def test_it_computes_metrics_that_match_a_hand_count():
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.3, 0.6, 0.7, 0.3, 0.8, 0.9])
    m = binary_metrics(y, scores, 0.5)

    # At 0.5 the predictions are 0 0 1 1 | 0 1 1: tp=2 (0.8, 0.9), tn=2 (0.1, 0.3),
    # fp=2 (0.6, 0.7), fn=1 (the fake at 0.3).
    assert m["confusion"] == {"tp": 2, "tn": 2, "fp": 2, "fn": 1}
    assert confusion(y, scores >= 0.5) == m["confusion"]
    assert m["n"] == 7

    # accuracy (2+2)/7; precision 2/(2+2); recall 2/(2+1); F1 = 2pr/(p+r) = (2/3)/(7/6) = 4/7;
    # specificity 2/4, so balanced accuracy (2/3 + 1/2)/2 = 7/12.
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["balanced_accuracy"] == pytest.approx(7 / 12)

    # ROC AUC over the 3x4 fake/real pairs: the fake at 0.3 beats 0.1 and ties 0.3 (1.5),
    # 0.8 and 0.9 beat all four reals (4 + 4): 9.5 / 12.
    assert m["roc_auc"] == pytest.approx(9.5 / 12)
    assert roc_auc(y, scores) == pytest.approx(9.5 / 12)

    # One class only: there is no AUC, and the counts still add up.
    only_real = binary_metrics([0, 0], [0.2, 0.7], 0.5)
    assert only_real["roc_auc"] is None
    assert only_real["confusion"] == {"tp": 0, "tn": 1, "fp": 1, "fn": 0}


def test_it_leaves_undefined_rates_undefined_rather_than_zero():
    # Five reals, none called fake: every call is right, and there is no fake to recall
    # and no fake call to be precise about (not a precision, recall and F1 of 0).
    m = binary_metrics(np.zeros(5), [0.1, 0.2, 0.3, 0.3, 0.3], 0.5)
    assert m["accuracy"] == 1.0 and m["balanced_accuracy"] == 1.0
    assert m["precision"] is None and m["recall"] is None and m["f1"] is None
    # Fakes, none called fake: recall 0 (every fake missed); precision undefined; F1,
    # 2TP / (2TP + FP + FN), is 0: the detector caught nothing.
    missed = binary_metrics([0, 1, 1], [0.1, 0.2, 0.3], 0.5)
    assert missed["recall"] == 0.0 and missed["precision"] is None and missed["f1"] == 0.0
    assert missed["balanced_accuracy"] == pytest.approx(0.5)
    # Reals only, one called fake: precision 0 (its one fake call is wrong); no recall;
    # F1 0 (one error, nothing right about fakes).
    alarm = binary_metrics([0, 0], [0.2, 0.7], 0.5)
    assert alarm["precision"] == 0.0 and alarm["recall"] is None and alarm["f1"] == 0.0
    # Both defined and both 0: F1 is 0, not undefined.
    wrong = binary_metrics([0, 1], [0.9, 0.1], 0.5)
    assert (wrong["precision"], wrong["recall"], wrong["f1"]) == (0.0, 0.0, 0.0)


def test_the_metrics_table_prints_a_dash_for_an_undefined_metric():
    from detector.cli import _table

    table = _table(
        {
            "test": {
                "frame": binary_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5, n_boot=0),
                "per_source": {"faces:lfw": binary_metrics(np.zeros(3), [0.1, 0.2, 0.3], 0.5)},
            }
        }
    )
    header, frames, lfw = table.splitlines()
    assert frames.split()[2:] == ["4", "0.500", "0.500", "0.500", "0.500", "0.500", "0.750", "-"]
    # n, accuracy, balanced accuracy, then precision, recall, F1, AUC and its interval.
    assert lfw.split() == ["faces:lfw", "3", "1.000", "1.000", "-", "-", "-", "-", "-"]
    # Every column lines up under its header.
    assert len(header) == len(frames) == len(lfw)


def test_the_roc_auc_counts_pairs_in_n_log_n_with_ties_as_one_half():
    def pairs(y, s):  # the definition, pair by pair
        pos, neg = s[y == 1], s[y == 0]
        wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
        return wins / (len(pos) * len(neg))

    # By hand: fakes 0.5, 0.5, 0.9 against reals 0.1, 0.5: 0.5 beats 0.1 and ties 0.5
    # (1.5, twice), 0.9 beats both (2): 5 of 6 pairs.
    y = np.array([1, 0, 1, 0, 1])
    s = np.array([0.5, 0.1, 0.5, 0.5, 0.9])
    assert roc_auc(y, s) == pytest.approx(5 / 6)
    # Every score tied: one half. Reversed order: 0.
    assert roc_auc([0, 1, 0, 1], [0.3] * 4) == 0.5
    assert roc_auc([1, 1, 0], [0.1, 0.2, 0.3]) == 0.0
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        s = np.round(rng.random(40), 1)  # many ties
        if 0 < y.sum() < 40:
            assert roc_auc(y, s) == pytest.approx(pairs(y, s), abs=1e-12)
    # A million faces: no million-by-million pair matrix (that would be terabytes).
    y = rng.integers(0, 2, 1_000_000)
    s = rng.random(1_000_000) + 0.5 * y
    assert 0.5 < roc_auc(y, s) < 1


def test_it_gives_the_auc_a_bootstrap_interval_that_resamples_whole_clips():
    from detector.metrics import _auc_by_ranks, auc_interval

    rng = np.random.default_rng(0)
    # The rank statistic the bootstrap uses is roc_auc's, checked pair by pair above.
    for _ in range(30):
        y = rng.integers(0, 2, 25)
        s = np.round(rng.random(25), 1)  # many ties
        if 0 < y.sum() < 25:
            assert _auc_by_ranks(y, s) == roc_auc(y, s)

    # Perfect separation: every resample that has both classes scores 1.
    assert auc_interval([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]) == (1.0, 1.0)
    # One class: no AUC, so no interval.
    assert auc_interval([0, 0, 0], [0.1, 0.5, 0.9]) is None
    assert binary_metrics([0, 1], [0.2, 0.9], 0.5, ["r", "f"])["roc_auc_ci"] is None
    # One real clip and one fake clip: resampling can only repeat them, so no interval
    # (not a zero-width one).
    assert auc_interval([0, 0, 1, 1], [0.2, 0.4, 0.3, 0.9], ["r", "r", "f", "f"]) is None

    # 12 clips of 20 faces, every face of a clip scored alike (as frames of one clip are).
    clip_y = np.array([0] * 6 + [1] * 6)
    clip_s = rng.random(12) + 0.4 * clip_y
    y, s, clips = np.repeat(clip_y, 20), np.repeat(clip_s, 20), np.repeat(np.arange(12), 20)
    by_clip = auc_interval(y, s, clips, seed=5)
    lo, hi = by_clip
    assert lo <= roc_auc(y, s) <= hi
    # Resampling whole clips is resampling the 12 clips: the same interval, draw for draw.
    assert by_clip == pytest.approx(auc_interval(clip_y, clip_s, seed=5))
    # Treating the 240 faces as independent claims far more certainty than 12 clips hold.
    naive_lo, naive_hi = auc_interval(y, s, seed=5)
    assert naive_hi - naive_lo < (hi - lo) / 2
    # Seeded: the same interval every time.
    assert auc_interval(y, s, clips, seed=5) == by_clip
    # binary_metrics carries it, grouped when groups are given.
    assert binary_metrics(y, s, 0.5, clips)["roc_auc_ci"] == pytest.approx(
        list(auc_interval(y, s, clips))
    )


def test_it_compares_two_models_on_the_same_clips_with_a_paired_interval():
    from detector.metrics import auc_difference, auc_interval

    rng = np.random.default_rng(1)
    clip_y = np.array([0] * 15 + [1] * 15)
    y, clips = np.repeat(clip_y, 8), np.repeat(np.arange(30), 8)
    hard = np.repeat(rng.random(30), 8)  # how hard each clip is, shared by both models
    # A nearly the same model: the paired interval is tight around 0, far tighter than
    # either model's own interval (what the clips share cancels out).
    a = hard + 0.3 * y + rng.normal(0, 0.01, len(y))
    b = a + rng.normal(0, 0.01, len(y))
    same = auc_difference((y, a, clips), (y, b, clips))
    lo, hi = same["ci"]
    own_lo, own_hi = auc_interval(y, a, clips)
    assert lo <= 0 <= hi and (hi - lo) < (own_hi - own_lo) / 3
    # A clearly better model, scored on other crops of the same clips (half as many):
    # the difference is positive and the interval excludes 0.
    keep = np.arange(len(y)) % 2 == 0
    better = auc_difference((y, 3 * y + hard, clips), (y[keep], a[keep], clips[keep]))
    assert better["difference"] > 0 and better["ci"][0] > 0
    # The estimate is the plain difference of the two AUCs.
    assert better["difference"] == pytest.approx(1.0 - roc_auc(y[keep], a[keep]))
    # One clip of a class: a difference, but no interval.
    two = auc_difference(([0, 1], [0.2, 0.9], ["r", "f"]), ([0, 1], [0.6, 0.4], ["r", "f"]))
    assert two["difference"] == 1.0 and two["ci"] is None


def test_it_averages_the_aucs_of_folds_with_an_interval_that_resamples_each_fold():
    from detector.metrics import auc_interval, mean_auc

    rng = np.random.default_rng(2)

    def fold(n_clips: int, signal: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        clip_y = np.array([0] * (n_clips // 2) + [1] * (n_clips - n_clips // 2))
        clip_s = rng.random(n_clips) + signal * clip_y
        return np.repeat(clip_y, 5), np.repeat(clip_s, 5), np.repeat(np.arange(n_clips), 5)

    a, b = fold(12, 0.6), fold(10, 0.1)
    # The estimate is the plain mean of the folds' AUCs.
    both = mean_auc([a, b], seed=3)
    assert both["aucs"] == pytest.approx([roc_auc(a[0], a[1]), roc_auc(b[0], b[1])])
    assert both["mean"] == pytest.approx((both["aucs"][0] + both["aucs"][1]) / 2)
    lo, hi = both["ci"]
    assert lo <= both["mean"] <= hi
    # One fold alone: its own clip bootstrap, draw for draw.
    assert mean_auc([a], seed=3)["ci"] == pytest.approx(list(auc_interval(*a, seed=3)))
    # Averaging two independent folds narrows the interval of either one.
    a_lo, a_hi = auc_interval(*a, seed=3)
    b_lo, b_hi = auc_interval(*b, seed=4)
    assert hi - lo < max(a_hi - a_lo, b_hi - b_lo)
    # Seeded.
    assert mean_auc([a, b], seed=3) == both
    # A fold with one clip of a class: the mean, but no interval; a fold with one class:
    # nothing.
    one = ([0, 0, 1, 1], [0.2, 0.4, 0.3, 0.9], ["r", "r", "f", "f"])
    assert mean_auc([a, one])["ci"] is None and mean_auc([a, one])["mean"] is not None
    assert mean_auc([a, ([0, 0], [0.1, 0.2], ["r", "s"])]) is None


def test_it_chooses_the_threshold_that_separates_the_classes():
    y = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])

    # Any threshold in (0.3, 0.7] separates perfectly; the ROC sweep lands on 0.7.
    t = choose_threshold(y, scores)
    assert t == pytest.approx(0.7)
    assert binary_metrics(y, scores, t)["accuracy"] == 1.0

    # Without both classes there is nothing to choose from: the neutral 0.5.
    assert choose_threshold([1, 1, 1], [0.2, 0.5, 0.9]) == 0.5

    # Extreme scores are clipped so a bundle's threshold stays inside (0, 1).
    assert choose_threshold([0, 1], [0.0001, 0.001]) == pytest.approx(0.05)


# ---- splits ----------------------------------------------------------------------------


def test_it_splits_faceforensics_by_video_without_leakage(tmp_path):
    root = tmp_path / "ffpp"
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(2, 64, 48, face_scale=0.1))
    ids = [f"{i:03d}" for i in range(0, 300, 10)] + ["183", "253"]
    orig = root / "original_sequences" / "youtube" / "c40" / "videos"
    orig.mkdir(parents=True)
    for a in ids:
        shutil.copy(clip, orig / f"{a}.mp4")
    for method in ("Deepfakes", "FaceSwap"):
        d = root / "manipulated_sequences" / method / "c40" / "videos"
        d.mkdir(parents=True)
        # As in FaceForensics++: ids come in pairs, swapped both ways (183_253, 253_183).
        for a, b in zip(ids[0::2], ids[1::2], strict=True):
            shutil.copy(clip, d / f"{a}_{b}.mp4")
            shutil.copy(clip, d / f"{b}_{a}.mp4")
    # A compression level that is not there is not silently mixed in.
    (root / "original_sequences" / "youtube" / "c23" / "videos").mkdir(parents=True)
    shutil.copy(clip, root / "original_sequences" / "youtube" / "c23" / "videos" / "999.mp4")

    items = ffpp_items(root, "c40")

    # Every c40 clip is found, labelled and sourced by its folder.
    assert len(items) == 3 * len(ids)
    assert all(it.kind == "video" for it in items)
    assert {it.source for it in items if it.label == 0} == {"ffpp:original"}
    assert {it.source for it in items if it.label == 1} == {"ffpp:Deepfakes", "ffpp:FaceSwap"}
    assert not any("999" in it.path for it in items)

    # A manipulated clip A_B shares one group with the originals A and B (both faces).
    by_name = {Path(it.path).stem + ":" + it.source: it for it in items}
    assert by_name["183:ffpp:original"].group == "ffpp/183"
    assert by_name["253:ffpp:original"].group == "ffpp/183"
    assert by_name["183_253:ffpp:Deepfakes"].group == "ffpp/183"
    assert by_name["253_183:ffpp:FaceSwap"].group == "ffpp/183"
    assert by_name["000:ffpp:original"].group != by_name["020:ffpp:original"].group

    # All items of a group land in one split, and no group appears in two splits.
    splits: dict[str, set[str]] = {}
    for it in items:
        splits.setdefault(it.group, set()).add(split_of(it.group, seed=1337))
    assert all(len(s) == 1 for s in splits.values())
    groups_in = {
        name: {g for g, s in splits.items() if name in s} for name in ("train", "val", "test")
    }
    assert not groups_in["train"] & groups_in["val"]
    assert not groups_in["train"] & groups_in["test"]
    assert not groups_in["val"] & groups_in["test"]
    # The check is not vacuous: 32 videos fill all three splits.
    assert all(groups_in.values())

    # The split depends on the seed, and is stable for a given one.
    assert [split_of(g, 1) for g in sorted(splits)] == [split_of(g, 1) for g in sorted(splits)]
    assert [split_of(g, 1) for g in sorted(splits)] != [split_of(g, 2) for g in sorted(splits)]


def test_frames_of_one_video_and_photos_of_one_person_share_a_split(tmp_path):
    root = tmp_path / "mix"
    names = {
        # MesoNet: <video>_<frame>; LFW: <Name>_<n>; a clip per file.
        "real": ["100_0.jpg", "100_112.jpg", "7_3.jpg", "Amy_Pascal_0001.jpg"],
        "fake": ["100_5.png", "Amy_Pascal_0002.jpg", "Bob-12.jpg", "clip_3.mp4"],
    }
    for label, files in names.items():
        (root / label).mkdir(parents=True)
        for f in files:
            (root / label / f).write_bytes(b"")
    # Frames of one video in their own folder, whatever their names.
    (root / "real" / "vid9" / "sub").mkdir(parents=True)
    for f in ("0001.jpg", "0002.jpg", "sub/0003.jpg"):
        (root / "real" / "vid9" / f).write_bytes(b"")

    def groups(items):
        return {Path(it.path).relative_to(root).as_posix(): it.group for it in items}

    got = groups(training.folder_items(root, group_by="video"))
    assert got["real/100_0.jpg"] == got["real/100_112.jpg"] == got["fake/100_5.png"] == "mix/100"
    assert got["real/Amy_Pascal_0001.jpg"] == got["fake/Amy_Pascal_0002.jpg"] == "mix/Amy_Pascal"
    assert got["real/7_3.jpg"] == "mix/7" and got["fake/Bob-12.jpg"] == "mix/Bob"
    assert got["real/vid9/0001.jpg"] == got["real/vid9/0002.jpg"] == "mix/vid9"
    assert got["real/vid9/sub/0003.jpg"] == "mix/vid9"  # person/video/frame: the person
    assert got["fake/clip_3.mp4"] == "mix/clip_3"  # a clip is one video already
    # Whatever the seed, a video's frames and a person's photos land in one split.
    together = [
        ["real/100_0.jpg", "real/100_112.jpg", "fake/100_5.png"],
        ["real/Amy_Pascal_0001.jpg", "fake/Amy_Pascal_0002.jpg"],
        ["real/vid9/0001.jpg", "real/vid9/0002.jpg", "real/vid9/sub/0003.jpg"],
    ]
    for seed in range(50):
        for files in together:
            assert len({split_of(got[f], seed, val=0.3, test=0.3) for f in files}) == 1

    # Numbers that only count the files of a folder (CIPLab's real_00001.jpg ...) are no
    # video: each image stays its own group.
    cip = tmp_path / "cip"
    (cip / "real").mkdir(parents=True)
    for i in (1, 2, 3):
        (cip / "real" / f"real_{i:05d}.jpg").write_bytes(b"")
    assert len({it.group for it in training.folder_items(cip, group_by="video")}) == 3

    # A video's frames also count as one clip (video-level rows, interval resampling);
    # each label's own: the real frames of video 100 and its fake frames are two clips.
    clips = {
        Path(it.path).relative_to(root).as_posix(): it.clip
        for it in training.folder_items(root, group_by="video")
    }
    assert clips["real/100_0.jpg"] == clips["real/100_112.jpg"] == "mix/real/100"
    assert clips["fake/100_5.png"] == "mix/fake/100" and clips["fake/clip_3.mp4"] is None

    # The default is one group per file, as the shipped model's splits were drawn.
    plain = groups(training.folder_items(root))
    assert plain["real/100_0.jpg"] == "mix/100_0" and plain["real/vid9/0001.jpg"] == "mix/0001"
    with pytest.raises(ValueError, match="group_by"):
        training.folder_items(root, group_by="person")


def test_frames_of_one_video_are_one_clip_for_the_video_level_scores(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    for label, names in {"real": ["100_0", "100_1", "7_0"], "fake": ["100_2", "8_0"]}.items():
        (tmp_path / label).mkdir()
        for n in names:
            cv2.imwrite(
                str(tmp_path / label / f"{n}.png"), rng.integers(0, 255, (80, 80, 3), np.uint8)
            )
    items = training.folder_items(tmp_path, "m", group_by="video")
    faces = training.extract_faces(items, 71, detect_images=False)
    assert sorted(set(faces.video_ids.tolist())) == [
        "m/fake/100",
        "m/fake/8",
        "m/real/100",
        "m/real/7",
    ]
    result = training.evaluate_scores(faces, np.linspace(0.1, 0.9, len(faces)), 0.5)
    assert result["frame"]["n"] == 5 and result["video"]["n"] == 4
    # Each file its own clip by default.
    plain = training.extract_faces(training.folder_items(tmp_path, "m"), 71, detect_images=False)
    assert len(set(plain.video_ids.tolist())) == 5


def test_a_csv_can_name_the_group_of_each_row(tmp_path):
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(
        "path,label,group\n"
        "a/0001.jpg,real,alice\n"
        "b/0001.jpg,fake,alice\n"
        "c/0007.jpg,0,\n"
        "/abs/clip.mp4,1\n"
    )
    items = training.csv_items(csv_file)
    assert [it.group for it in items] == ["csv/alice", "csv/alice", "csv/0007", "csv/clip"]
    assert [it.label for it in items] == [0, 1, 0, 1]
    assert [it.clip for it in items] == ["csv/real/alice", "csv/fake/alice", None, None]
    assert items[0].path == str(tmp_path / "a" / "0001.jpg") and items[3].kind == "video"
    # path,label rows without a header still read, one group per row.
    csv_file.write_text("x.jpg,fake\ny.jpg,real\n")
    assert [it.group for it in training.csv_items(csv_file)] == ["csv/x", "csv/y"]
    csv_file.write_text("x.jpg\n")
    with pytest.raises(ValueError, match="needs a path and a label"):
        training.csv_items(csv_file)


# ---- self-blended images -----------------------------------------------------------------


def test_it_self_blends_inside_the_face_only():
    img = astronaut()
    points = landmarks(img)
    # The landmarks sit on her face (x 175-265, y 75-170 in the photo).
    assert points is not None and points.shape == (68, 2)
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    assert 160 < x0 < x1 < 290 and 60 < y0 < y1 < 200

    for seed in range(4):
        out = self_blend(img, random.Random(seed))
        diff = np.abs(out.astype(int) - img.astype(int)).sum(axis=2)
        # Same shape and type: a drop-in fake for the real image.
        assert out.shape == img.shape and out.dtype == np.uint8
        # The centre of the face (eyes to mouth) changed, even for the faintest blend ratio.
        assert diff[115:150, 200:245].mean() > 5, seed
        # Far outside the face, the image is untouched, pixel for pixel.
        far = np.ones(diff.shape, bool)
        far[y0 - 40 : y1 + 40, x0 - 40 : x1 + 40] = False
        assert diff[far].max() == 0, seed

    # The same seed gives the same fake.
    assert np.array_equal(self_blend(img, random.Random(7)), self_blend(img, random.Random(7)))


def test_it_falls_back_to_an_ellipse_when_there_is_no_face():
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    out = self_blend(noise, random.Random(3))
    diff = np.abs(out.astype(int) - noise.astype(int)).sum(axis=2)
    # The centre is blended, the corners (outside any centred ellipse) are not.
    assert diff[40:56, 40:56].mean() > 5
    for corner in (diff[:8, :8], diff[:8, -8:], diff[-8:, :8], diff[-8:, -8:]):
        assert corner.max() == 0

    # Anything but an RGB uint8 image is refused with a clear message.
    with pytest.raises(ValueError, match="RGB uint8"):
        self_blend(noise.astype(np.float32), random.Random(0))


def test_it_makes_one_fake_per_real_face_in_the_same_group(tmp_path):
    real = np.stack(astronaut_crops(3, SIZE, seed=0))
    fake = real[:1].copy()
    data = FaceSet(
        np.concatenate([real, fake]),
        np.array([0, 0, 0, 1]),
        np.array(["faces:a", "faces:a", "clips:b", "faces:a"]),
        np.array(["a/0", "a/1", "b/0", "a/9"]),
    )
    blends = self_blended_set(data, seed=5)

    # Only the real faces are blended; each fake keeps its original's group and names it.
    assert len(blends) == 3
    assert blends.x.shape == (3, SIZE, SIZE, 3) and blends.x.dtype == np.uint8
    assert blends.y.tolist() == [1, 1, 1]
    assert blends.groups.tolist() == ["a/0", "a/1", "b/0"]
    assert blends.sources.tolist() == ["sbi:faces:a", "sbi:faces:a", "sbi:clips:b"]
    assert all(not np.array_equal(b, r) for b, r in zip(blends.x, real, strict=True))

    # Reproducible by seed, so a rerun trains on the same data.
    assert np.array_equal(self_blended_set(data, seed=5).x, blends.x)

    # Originals and blends survive the .npz round trip the CLI uses.
    FaceSet.concat([data, blends]).save(tmp_path / "both.npz")
    both = FaceSet.load(tmp_path / "both.npz")
    assert len(both) == 7 and both.sources.tolist()[-1] == "sbi:clips:b"


def test_fresh_blends_are_new_every_epoch_and_the_same_for_the_same_epoch(monkeypatch):
    real = np.stack(astronaut_crops(3, SIZE, seed=0))
    data = FaceSet(
        np.concatenate([real, real[:1]]),
        np.array([0, 0, 0, 1]),
        np.array(["faces:a", "faces:a", "clips:b", "faces:a"]),
        np.array(["a/0", "a/1", "b/0", "a/9"]),
    )
    fresh = sbi.FreshBlends(data, seed=5)
    assert len(fresh) == 3  # the real faces only

    # Landmarks were found once, up front: making an epoch's blends never detects again.
    def no_detection(*args, **kwargs):
        raise AssertionError("landmarks searched again")

    monkeypatch.setattr(sbi, "landmarks", no_detection)
    e0, e1 = fresh(0), fresh(1)
    assert e0.y.tolist() == [1, 1, 1] and e0.groups.tolist() == ["a/0", "a/1", "b/0"]
    assert e0.sources.tolist() == ["sbi:faces:a", "sbi:faces:a", "sbi:clips:b"]
    assert all(not np.array_equal(b, r) for b, r in zip(e0.x, real, strict=True))
    # A new blend of every face each epoch; the same ones again for the same epoch
    # (a resumed run trains on what the uninterrupted run would have).
    assert all(not np.array_equal(a, b) for a, b in zip(e0.x, e1.x, strict=True))
    assert np.array_equal(fresh(1).x, e1.x)

    # Given landmarks are used as they are (None: the ellipse fallback).
    given = sbi.FreshBlends(data, seed=5, points=[None, None, None])
    assert len(given(0)) == 3
    with pytest.raises(ValueError, match="2 landmark sets for 3 real faces"):
        sbi.FreshBlends(data, seed=5, points=[None, None])


# ---- a real training run ---------------------------------------------------------------


@contextmanager
def fast_batchnorm_recalibration() -> Iterator[None]:
    """Precise BN runs 60 eager batches after training, most of a tiny run's time;
    4 batches exercise the same code."""
    real = training.recalibrate_batchnorm

    def few(model, data, **kw):
        return real(model, data, **{**kw, "batches": 4})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "recalibrate_batchnorm", few)
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run: 16 training faces (8 crops, 8 self-blends), 8 for validation,
    1 epoch of 2 batches of 8."""
    work = tmp_path_factory.mktemp("train") / "work"
    train_set = faces_with_blends(8, seed=1, prefix="tr")
    val_set = faces_with_blends(4, seed=2, prefix="va")
    config = TrainConfig(
        input_size=SIZE, epochs=1, batch_size=8, steps_per_epoch=2, patience=2, seed=3
    )
    epochs: list[int] = []
    with fast_batchnorm_recalibration():
        bundle, history = train(
            train_set,
            val_set,
            config,
            work,
            lambda epoch, logs: epochs.append(epoch),
            name="tiny",
            version="tiny-1",
        )
    return {
        "state": json.loads((work / "state.json").read_text()),
        "files": sorted(p.name for p in work.iterdir()),
        "bundle": bundle,
        "history": history,
        "work": work,
        "epochs": epochs,
        "config": config,
        "data": (train_set, val_set),
    }


def test_it_trains_a_bundle_with_a_threshold_and_metrics(trained):
    bundle, history = trained["bundle"], trained["history"]
    train_set, val_set = trained["data"]

    # One epoch ran and was recorded, with its training and validation loss.
    assert trained["epochs"] == [1]
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])
    assert len(history["val_loss"]) == 1
    assert trained["state"]["epoch"] == 1
    assert {"last-1.keras", "best.keras", "tensorboard"} <= set(trained["files"])
    assert trained["state"]["checkpoint"] == "last-1.keras"

    # The bundle carries a threshold chosen on validation data and the metrics behind it.
    meta = bundle.meta
    assert 0 < meta.threshold < 1
    frame = meta.metrics["validation"]["frame"]
    assert frame["n"] == len(val_set) == 8
    assert {"accuracy", "precision", "recall", "f1", "roc_auc", "confusion"} <= set(frame)
    assert set(meta.metrics["validation"]["per_source"]) == {"faces:astro", "sbi:faces:astro"}
    assert meta.training["train_faces"] == len(train_set) == 16
    # What ran, beside what was asked: 2 batches of 8 (the cap is 2 too), 1 epoch, whose
    # checkpoint (the best, being the only one) ships.
    assert meta.training["steps_run_per_epoch"] == 2 and meta.training["epochs_run"] == 1
    assert meta.training["chosen_epoch"] == 1
    assert meta.data_fingerprint == train_set.fingerprint()
    meta.validate()

    # It predicts a probability per face.
    scores = bundle.predict(val_set.x)
    assert scores.shape == (8,) and ((scores >= 0) & (scores <= 1)).all()


def test_it_logs_every_epoch_as_tensorboard_scalars(trained):
    # Read back by TensorBoard's own reader: what `tensorboard --logdir` would plot.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = trained["history"]
    for split, prefix in (("train", ""), ("validation", "val_")):
        events = EventAccumulator(str(trained["work"] / "tensorboard" / split))
        events.Reload()
        for name in ("loss", "accuracy"):
            scalars = events.Scalars(f"epoch_{name}")
            assert [s.step for s in scalars] == [0]
            assert scalars[0].value == pytest.approx(history[prefix + name][0], rel=1e-6)


def test_a_run_with_fresh_faces_trains_on_each_epochs_own(tmp_path):
    train_set = faces_with_blends(4, seed=1, prefix="tr")
    reals = train_set.subset(train_set.y == 0)
    val_set = faces_with_blends(2, seed=2, prefix="va")
    blends = sbi.FreshBlends(reals, seed=4, points=[None] * len(reals))
    asked: list[int] = []

    def fresh(epoch: int) -> FaceSet:
        asked.append(epoch)
        return blends(epoch)

    seen: list[np.ndarray] = []
    real_augment = training.augment

    def recording_augment(img, rng):
        seen.append(img.copy())
        return real_augment(img, rng)

    config = TrainConfig(input_size=SIZE, epochs=2, batch_size=8, steps_per_epoch=2, seed=3)
    with fast_batchnorm_recalibration(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "augment", recording_augment)
        bundle, history = train(train_set, val_set, config, tmp_path, fresh=fresh)

    # Asked for epoch 0 up front (class balance), then for each epoch it trained.
    assert asked[0] == 0 and sorted(set(asked)) == [0, 1] and len(history["loss"]) == 2
    # 8 + 4 faces a step, 2 steps an epoch: every face of an epoch, fresh ones included.
    first, second = seen[:12], seen[16:28]
    for epoch, faces in ((0, first), (1, second)):
        made = blends(epoch).x
        assert sum(any(np.array_equal(f, m) for m in made) for f in faces) == len(made)
    assert bundle.meta.training["fresh_faces_per_epoch"] == 4
    assert bundle.meta.training["train_faces"] == 8


# ---- source weights --------------------------------------------------------------------


def test_it_weights_each_face_by_the_longest_source_that_covers_it():
    sources = np.array(
        ["ffpp:Deepfakes", "ffpp:original", "faces:lfw", "sbi:faces:lfw", "sbi:ffpp:original"]
    )
    weights = {"ffpp": 2.0, "ffpp:original": 0.5, "sbi": 3.0, "sbi:faces:lfw": 0.0}

    # The longest key wins; a key covers a source only up to a ':' ("ffpp" is not "ffpp2").
    assert training.face_weights(sources, weights).tolist() == [2.0, 0.5, 1.0, 0.0, 3.0]
    assert training.face_weights(np.array(["ffpp2:x"]), {"ffpp": 2.0}).tolist() == [1.0]
    # No weights: every face counts 1.
    assert training.face_weights(sources, {}).tolist() == [1.0] * 5


def test_it_balances_the_classes_by_their_total_weight():
    y = np.array([0, 0, 0, 1])

    # With every weight 1, the usual n / (2 n_class): 4 / 6 and 4 / 2.
    assert training.class_factors(y, np.ones(4)).tolist() == pytest.approx([2 / 3, 2.0])
    # Weights 1, 1, 2 (real: 4 in all) and 1 (fake): 5 / 8 and 5 / 2, so each class
    # carries half of the total weight.
    w = np.array([1.0, 1.0, 2.0, 1.0])
    f = training.class_factors(y, w)
    assert f.tolist() == pytest.approx([5 / 8, 5 / 2])
    assert (w * f[y])[y == 0].sum() == pytest.approx((w * f[y])[y == 1].sum())

    # A class that is there but weighs nothing is refused, and so is a named source
    # the training faces lack.
    with pytest.raises(ValueError, match="every fake training face has weight 0"):
        training.class_factors(y, np.array([1.0, 1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="no training face comes from source 'ffpp'"):
        training.check_source_weights({"ffpp": 2.0}, np.array(["faces:lfw"]))
    with pytest.raises(ValueError, match="must be 0 or more"):
        TrainConfig(source_weights={"ffpp": -1.0})


def test_a_run_weights_every_face_in_the_loss_by_its_source(tmp_path):
    import keras

    # Two real sources and their blends: 4 astronaut crops and 4 relabelled as "faces:b".
    data = faces_with_blends(8, seed=1, prefix="tr")
    b = np.array([i % 8 >= 4 for i in range(16)])
    data.sources[b & (data.y == 0)] = "faces:b"
    data.sources[b & (data.y == 1)] = "sbi:faces:b"
    val_set = faces_with_blends(2, seed=2, prefix="va")
    weights = {"faces:b": 0.5, "sbi": 2.0, "sbi:faces:b": 0.0}
    # Real: 4 x 1 + 4 x 0.5 = 6; fake: 4 x 2 + 4 x 0 = 8; 14 in all, so the classes'
    # factors are 14 / 12 and 14 / 16. Each face's weight in the loss, by hand:
    expected = {"faces:astro": 7 / 6, "faces:b": 7 / 12, "sbi:faces:astro": 7 / 4, "sbi:faces:b": 0}

    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real_step = keras.Model.train_on_batch

    def recording_step(self, x, y=None, sample_weight=None, **kw):
        seen.append((np.asarray(y), np.asarray(sample_weight)))
        return real_step(self, x, y, sample_weight=sample_weight, **kw)

    config = TrainConfig(
        input_size=SIZE, epochs=1, batch_size=8, steps_per_epoch=2, seed=3, source_weights=weights
    )
    with fast_batchnorm_recalibration(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(keras.Model, "train_on_batch", recording_step)
        mp.setattr(training, "augment", lambda img, rng: img)
        bundle, _ = train(data, val_set, config, tmp_path)

    # The whole set went through once (2 steps of 8), each face at its hand-computed weight.
    plan = training.BatchPlan(16, 8, 3, shuffle=True, epoch=0)
    assert len(seen) == 2
    for i, (y, w) in enumerate(seen):
        idx = plan.indices(i)
        assert y.tolist() == data.y[idx].tolist()
        assert w.tolist() == pytest.approx([expected[s] for s in data.sources[idx]])
    # The bundle records the weights it was trained with.
    assert bundle.meta.training["source_weights"] == weights


def test_the_cli_trains_with_source_weights_and_refuses_unknown_ones(tmp_path, capsys):
    from detector.cli import build_parser, main

    data = faces_with_blends(8, seed=6, prefix="a")
    data.save(tmp_path / "faces.npz")
    argv = ["train", "--data", str(tmp_path / "faces.npz"), "--out", str(tmp_path / "m")]
    argv += ["--work-dir", str(tmp_path / "w"), "--epochs", "1", "--batch-size", "8"]
    argv += ["--val-fraction", "0.25", "--test-fraction", "0", "--seed", "2"]

    # A source the faces do not have is refused before any training, naming those they have.
    assert main([*argv, "--source-weight", "ffpp=2"]) == 2
    err = capsys.readouterr().err
    assert "no training face comes from source 'ffpp'" in err
    assert "faces:astro, sbi:faces:astro" in err
    assert not (tmp_path / "w").exists()
    # So is weighing every fake at 0, and a weight that is not a number 0 or more.
    assert main([*argv, "--source-weight", "sbi=0"]) == 2
    assert "every fake training face has weight 0" in capsys.readouterr().err
    for bad in ("sbi", "sbi=-1", "sbi=x", "=2"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*argv, "--source-weight", bad])

    # A valid weight trains, and the bundle says so.
    with fast_batchnorm_recalibration():
        assert main([*argv, "--source-weight", "sbi=2", "--source-weight", "faces=1.5"]) == 0
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["training"]["source_weights"] == {"sbi": 2.0, "faces": 1.5}


def test_it_resumes_from_the_work_dir(trained):
    train_set, val_set = trained["data"]
    epochs: list[int] = []

    # Rerun with the same work dir: the model comes back from last-1.keras and the epoch
    # from state.json, so the finished epoch is not trained again and its history stays.
    # (Asking for one more epoch would test the same path plus a second 20 s fit.)
    with fast_batchnorm_recalibration():
        bundle, history = train(
            train_set,
            val_set,
            trained["config"],
            trained["work"],
            lambda e, logs: epochs.append(e),
            name="tiny",
        )
    assert epochs == []
    assert history["loss"] == trained["history"]["loss"]
    assert json.loads((trained["work"] / "state.json").read_text())["epoch"] == 1
    # And it still ends with a usable bundle.
    assert 0 < bundle.meta.threshold < 1
    assert bundle.meta.metrics["validation"]["frame"]["n"] == len(val_set)


def test_it_trains_afresh_when_the_work_dir_holds_a_run_on_other_data(trained, tmp_path):
    import shutil

    train_set, val_set = trained["data"]
    work = tmp_path / "work"
    shutil.copytree(trained["work"], work)
    # The same work dir, but one training face fewer (a labelled clip deleted between two
    # attempts of a site run): its epoch is trained again, not resumed on the wrong data.
    fewer = train_set.subset(np.arange(len(train_set)) != 0)
    epochs: list[int] = []
    with fast_batchnorm_recalibration():
        train(fewer, val_set, trained["config"], work, lambda e, logs: epochs.append(e), name="t")
    assert epochs == [1]
    assert json.loads((work / "data.json").read_text())["train"] == fewer.fingerprint()
    # best.keras was written by rename: no partial file is left behind.
    assert (work / "best.keras").exists() and not (work / "best.partial.keras").exists()


class Killed(Exception):
    """A run stopped where _fit would have started its first epoch."""


@contextmanager
def killed_before_the_first_epoch_ends() -> Iterator[list[int]]:
    """train() up to the point where its epochs would start, recording the epoch it would
    have started from; no training step runs."""
    starts: list[int] = []

    def fit(model, train_set, val_set, config, work, initial_epoch, *rest, **kw):
        starts.append(initial_epoch)
        raise Killed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "_fit", fit)
        yield starts


def test_a_fresh_run_killed_before_its_first_epoch_does_not_resume_the_old_one(trained, tmp_path):
    train_set, val_set = trained["data"]
    work = tmp_path / "work"
    shutil.copytree(trained["work"], work)
    fewer = train_set.subset(np.arange(len(train_set)) != 0)
    with killed_before_the_first_epoch_ends() as starts:
        # Other data: a fresh start, killed before its first epoch ended ...
        with pytest.raises(Killed):
            train(fewer, val_set, trained["config"], work, name="t")
        # ... leaves nothing of the old run to resume: no state, checkpoint or logs.
        assert sorted(p.name for p in work.iterdir()) == ["data.json"]
        assert json.loads((work / "data.json").read_text())["train"] == fewer.fingerprint()
        # So the rerun, whose data data.json now matches, starts afresh too (it resumed
        # the old run's last-1.keras at epoch 1 when those files outlived the switch).
        with pytest.raises(Killed):
            train(fewer, val_set, trained["config"], work, name="t")
    assert starts == [0, 0]


@pytest.mark.parametrize(
    "change",
    ["crop size", "learning rate", "seed", "batch size", "steps", "fine-tune", "fresh faces"],
)
def test_a_run_resumes_only_with_the_settings_it_started_with(trained, tmp_path, change):
    train_set, val_set = trained["data"]
    config = trained["config"]
    work = tmp_path / "work"
    shutil.copytree(trained["work"], work)
    fresh = None
    if change == "crop size":  # the same faces (groups and labels) cropped larger
        bigger = replace(train_set, x=np.stack([cv2.resize(f, (80, 80)) for f in train_set.x]))
        train_set, config = bigger, replace(config, input_size=80)
    elif change == "learning rate":
        config = replace(config, learning_rate=config.learning_rate / 10)
    elif change == "seed":
        config = replace(config, seed=config.seed + 1)
    elif change == "batch size":
        config = replace(config, batch_size=4)
    elif change == "steps":
        config = replace(config, steps_per_epoch=1)
    elif change == "fine-tune":
        config = replace(config, fine_tune_from=str(trained["bundle"].save(tmp_path / "p")))
    elif change == "fresh faces":

        def fresh(epoch: int) -> FaceSet:
            return train_set.subset(train_set.y == 1)

    with killed_before_the_first_epoch_ends() as starts, pytest.raises(Killed):
        train(train_set, val_set, config, work, name="t", fresh=fresh)
    assert starts == [0]
    assert not (work / "state.json").exists() and not list(work.glob("*.keras"))


def test_a_run_asked_for_more_epochs_or_patience_resumes(trained, tmp_path):
    train_set, val_set = trained["data"]
    work = tmp_path / "work"
    shutil.copytree(trained["work"], work)
    # What a run is asked to go on for is no other run: it resumes at epoch 1.
    config = replace(trained["config"], epochs=3, patience=5, extra={"note": "more"})
    with killed_before_the_first_epoch_ends() as starts, pytest.raises(Killed):
        train(train_set, val_set, config, work, name="t")
    assert starts == [1]
    # A work folder from before data.json recorded the settings resumes too, and is
    # recorded in full from then on.
    data = json.loads((work / "data.json").read_text())
    assert data["crop"] == [SIZE, SIZE, 3] and data["config"]["learning_rate"] == 1e-3
    (work / "data.json").write_text(
        json.dumps({"train": data["train"], "validation": data["validation"]})
    )
    with killed_before_the_first_epoch_ends() as starts, pytest.raises(Killed):
        train(train_set, val_set, config, work, name="t")
    assert starts == [1] and json.loads((work / "data.json").read_text()) == data


def test_a_resumed_run_trains_on_the_batches_an_uninterrupted_run_would():
    from detector.training import BatchPlan

    def seen(plan: BatchPlan, steps: int) -> list[tuple[list[int], float]]:
        return [(plan.indices(i).tolist(), plan.rng(i).random()) for i in range(steps)]

    # 50 faces, batches of 8, 3 steps an epoch (fewer than the 7 batches of the data).
    running = BatchPlan(50, 8, seed=3, shuffle=True)
    epochs = [seen(running, 3)]
    for epoch in (1, 2):
        running.start(epoch)
        epochs.append(seen(running, 3))
    # Resumed at epoch 2: the same faces in the same order, the same augmentation draws.
    assert seen(BatchPlan(50, 8, seed=3, shuffle=True, epoch=2), 3) == epochs[2]
    # Each epoch draws a new sample of the data, not the first one again.
    firsts = [{j for idx, _ in e for j in idx} for e in epochs]
    assert firsts[0] != firsts[1] != firsts[2]
    # An epoch is a permutation: the last batch is padded from its start, never short.
    full = BatchPlan(50, 8, seed=3, shuffle=True)
    batches = [full.indices(i) for i in range(full.batches)]
    assert all(len(b) == 8 for b in batches)
    assert sorted(np.concatenate(batches)[:50].tolist()) == list(range(50))
    # Validation data is never shuffled.
    assert BatchPlan(20, 8, seed=3, shuffle=False, epoch=5).indices(0).tolist() == list(range(8))


def test_it_scores_validation_faces_once_each_whatever_the_batch_padding(trained):
    from detector.model import preprocess
    from detector.training import _validate

    bundle = trained["bundle"]
    _, val_set = trained["data"]
    # Batches of 3 for 8 faces: the last batch is padded with 1 face, not counted.
    got = _validate(bundle.model, val_set, 3)
    probs = np.asarray(bundle.model.predict(preprocess(val_set.x), verbose=0))
    p_true = probs[np.arange(len(val_set)), val_set.y]
    assert got["val_loss"] == pytest.approx(-np.mean(np.log(p_true)), rel=1e-4)
    assert got["val_accuracy"] == pytest.approx(np.mean(probs.argmax(1) == val_set.y))


def test_early_stopping_counts_epochs_since_the_best_over_a_resumed_history(tmp_path):
    from detector.training import _fit

    # Best validation loss at epoch 1, then two epochs without improvement: with
    # patience 2, a resumed run stops before training (the model is never touched).
    history = {"loss": [0.7, 0.6, 0.5], "val_loss": [0.4, 0.45, 0.5]}
    tiny = faces_with_blends(2, seed=1, prefix="x")
    config = TrainConfig(input_size=SIZE, epochs=6, batch_size=2, patience=2)
    seen: list[int] = []
    _fit(
        None,
        tiny,
        tiny,
        config,
        tmp_path,
        3,
        history,
        {0: 1.0, 1: 1.0},
        lambda e, l: seen.append(e),
    )
    assert seen == [] and not (tmp_path / "state.json").exists()


def test_weight_average_is_the_mean_of_its_snapshots_and_survives_a_restart(tmp_path):
    from detector.training import WeightAverage

    avg = WeightAverage()
    for w in ([1.0, 2.0], [3.0, 4.0], [5.0, 9.0]):
        avg.add([np.array(w[:1]), np.array(w[1:])])
    # Means by hand: (1 + 3 + 5) / 3 = 3 and (2 + 4 + 9) / 3 = 5.
    assert avg.count == 3
    assert [w.tolist() for w in avg.weights()] == [[3.0], [5.0]]

    # Saved at an epoch's end and loaded by the resumed run: the same average goes on.
    avg.save(tmp_path / "average.npz")
    resumed = WeightAverage.load(tmp_path / "average.npz")
    resumed.add([np.array([7.0]), np.array([1.0])])
    assert resumed.count == 4
    assert [w.tolist() for w in resumed.weights()] == [[4.0], [4.0]]  # 16/4, 16/4
    assert WeightAverage.load(tmp_path / "missing.npz").count == 0
    with pytest.raises(ValueError, match="no weights"):
        WeightAverage().weights()
    with pytest.raises(ValueError, match="average_every must be 1 or more"):
        TrainConfig(average_every=0)


def test_a_run_with_weight_averaging_ships_the_mean_of_its_steps_across_a_resume(tmp_path):
    import keras

    train_set = faces_with_blends(8, seed=1, prefix="tr")
    val_set = faces_with_blends(4, seed=2, prefix="va")
    # One step an epoch, averaged after every step, at a learning rate large enough that
    # two steps move every weight far beyond float16 rounding.
    config = TrainConfig(
        input_size=SIZE,
        epochs=1,
        batch_size=8,
        steps_per_epoch=1,
        learning_rate=0.02,
        patience=5,
        seed=3,
        average_every=1,
    )
    work = tmp_path / "work"

    def trainable(model) -> list[np.ndarray]:
        return [np.asarray(v) for v in model.trainable_weights]

    def checkpoint() -> Path:
        return work / json.loads((work / "state.json").read_text())["checkpoint"]

    with fast_batchnorm_recalibration():
        train(train_set, val_set, config, work, name="avg")
        w1 = trainable(keras.models.load_model(checkpoint()))
        # A crash in epoch 2 after its average was written but before state.json was: the
        # stray file must not be read, or epoch 2's snapshots would count twice.
        training.WeightAverage([np.zeros(1)] * 3, count=7).save(work / "average-2.npz")
        # Interrupted after epoch 1 and resumed for a second: step 2 joins the same average.
        bundle, _ = train(train_set, val_set, replace(config, epochs=2), work, name="avg")
    w2 = trainable(keras.models.load_model(checkpoint()))
    shipped = trainable(bundle.model)
    # Epoch 1's files went once epoch 2's state was written.
    assert sorted(p.name for p in work.glob("last*")) == ["last-2.keras"]
    assert sorted(p.name for p in work.glob("average*")) == ["average-2.npz"]

    assert bundle.meta.training["average_every"] == 1
    assert bundle.meta.training["averaged_snapshots"] == 2
    # Two epochs of one step (capped: the data makes 2 batches), the average shipping.
    assert bundle.meta.training["epochs_run"] == 2
    assert bundle.meta.training["steps_run_per_epoch"] == 1
    assert bundle.meta.training["chosen_epoch"] is None
    # The shipped weights are (w1 + w2) / 2, up to the bundle's float16 storage ...
    for got, a, b in zip(shipped, w1, w2, strict=True):
        np.testing.assert_allclose(got, (a + b) / 2, atol=1e-3)
    # ... and not the last step's weights, which is what a run without averaging keeps.
    gap = np.mean(np.concatenate([np.abs(g - b).ravel() for g, b in zip(shipped, w2, strict=True)]))
    assert gap > 3e-3
    # Precise BN ran on the average, and the bundle still scores faces.
    assert 0 < bundle.meta.threshold < 1
    assert bundle.predict(val_set.x).shape == (len(val_set),)


# ---- bundles ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_bundle(trained, tmp_path_factory) -> Path:
    return trained["bundle"].save(tmp_path_factory.mktemp("bundle") / "tiny")


def test_it_round_trips_a_bundle(trained, saved_bundle):
    bundle = trained["bundle"]
    _, val_set = trained["data"]
    loaded = ModelBundle.load(saved_bundle)

    # The metadata comes back as written.
    assert loaded.meta == bundle.meta
    assert loaded.input_size == SIZE
    # Weights are stored as float16: the network's probabilities agree to 1e-3, not bit
    # for bit. (Compared before Platt calibration, whose slope on a barely trained model
    # magnifies any difference.)
    raw_before = ModelBundle(replace(bundle.meta, calibration=None), bundle.model)
    raw_after = ModelBundle(replace(loaded.meta, calibration=None), loaded.model)
    np.testing.assert_allclose(
        raw_after.predict(val_set.x), raw_before.predict(val_set.x), atol=1e-3
    )


def test_it_fine_tunes_a_bundle_at_another_input_size(saved_bundle):
    # "Train small, then fine-tune large": every Xception weight keeps its shape whatever
    # the input size, so a 71 px parent starts a 96 px run with all its weights.
    parent = ModelBundle.load(saved_bundle)
    model = training.initial_model(TrainConfig(input_size=96, fine_tune_from=str(saved_bundle)))
    assert model.input_shape == (None, 96, 96, 3)
    ours, theirs = model.get_weights(), parent.model.get_weights()
    assert len(ours) == len(theirs)
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    # Without a parent, a run starts from fresh weights.
    fresh = training.initial_model(TrainConfig(input_size=96))
    assert not np.array_equal(fresh.get_weights()[0], theirs[0])


def test_it_evaluates_a_bundle_against_another_on_the_same_faces(
    trained, saved_bundle, tmp_path, capsys
):
    from detector.cli import main

    _, val_set = trained["data"]  # 4 real crops and their 4 blends, 8 clips
    data = tmp_path / "val.npz"
    val_set.save(data)
    base = ["evaluate", "--data", str(data), "--runtime", "keras", "--model", str(saved_bundle)]

    # Against itself: the same scores, so a difference of exactly 0 and an interval
    # that cannot exclude it.
    out = tmp_path / "self.json"
    assert main([*base, "--against", str(saved_bundle), "--json", str(out)]) == 0
    same = json.loads(out.read_text())["against"]["auc_difference"]
    assert same["overall"]["difference"] == 0 and same["overall"]["ci"] == [0, 0]
    assert "cannot tell the two models apart" in capsys.readouterr().out

    # Against the shipped model (128 px: the same crops, resized): each AUC is the one
    # its own evaluation reports, and the difference is theirs, overall and per fake source.
    out = tmp_path / "shipped.json"
    assert main([*base, "--against", "models/default", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    against = result["against"]
    diff = against["auc_difference"]["overall"]
    assert against["version"] == json.loads(Path("models/default/meta.json").read_text())["version"]
    assert diff["auc_a"] == pytest.approx(result["frame"]["roc_auc"])
    assert diff["auc_b"] == pytest.approx(against["evaluation"]["frame"]["roc_auc"])
    assert diff["difference"] == pytest.approx(diff["auc_a"] - diff["auc_b"])
    lo, hi = diff["ci"]
    assert lo <= diff["difference"] <= hi
    assert set(against["auc_difference"]["per_fake_source"]) == {"sbi:faces:astro"}
    printed = capsys.readouterr().out
    assert f"minus {against['version']}" in printed and f"{diff['difference']:+.3f}" in printed


def _broken_copy(saved: Path, tmp_path: Path, **meta_changes) -> Path:
    path = tmp_path / "broken"
    shutil.copytree(saved, path)
    meta = json.loads((path / "meta.json").read_text())
    meta.update(meta_changes)
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def test_it_refuses_a_bundle_with_the_wrong_class_order(saved_bundle, tmp_path):
    path = _broken_copy(saved_bundle, tmp_path, class_order=["fake", "real"])
    # Swapped classes would silently invert every verdict: refuse, and say why.
    with pytest.raises(BundleMismatch, match=r"class order \['fake', 'real'\] must be"):
        ModelBundle.load(path)


def test_it_refuses_a_bundle_of_an_unknown_architecture(saved_bundle, tmp_path):
    path = _broken_copy(saved_bundle, tmp_path, architecture="resnet50")
    with pytest.raises(BundleMismatch, match="architecture 'resnet50' is not supported"):
        ModelBundle.load(path)


def test_it_refuses_a_bundle_without_weights_or_meta(saved_bundle, tmp_path):
    path = _broken_copy(saved_bundle, tmp_path)
    (path / "weights.npz").unlink()
    # The message names the missing file and the directory, so the fix is obvious.
    with pytest.raises(BundleMismatch, match="No weights.npz in"):
        ModelBundle.load(path)

    (path / "meta.json").unlink()
    with pytest.raises(BundleMismatch, match="not a Verity model bundle"):
        ModelBundle.load(path)


# ---- the CLI ---------------------------------------------------------------------------

SOURCE_OPTIONS = [
    "--faces",
    "--ffpp",
    "--csv",
    "--compression",
    "--frames-per-video",
    "--aligned",
]
OPTIONS = {
    "extract-faces": [*SOURCE_OPTIONS, "--size", "--out", "--sbi"],
    "train": [
        "--data",
        "--out",
        "--work-dir",
        "--epochs",
        "--batch-size",
        "--learning-rate",
        "--patience",
        "--steps-per-epoch",
        "--seed",
        "--val-fraction",
        "--test-fraction",
        "--init-weights",
        "--fine-tune-from",
        "--no-augment",
        "--average-every",
        "--sbi",
        "--fresh-sbi",
        "--source-weight",
        "--name",
        "--version",
    ],
    "evaluate": [
        *SOURCE_OPTIONS,
        "--data",
        "--model",
        "--threshold",
        "--against",
        "--json",
        "--runtime",
    ],
}


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_it_documents_every_option_in_help(command):
    from detector.cli import build_parser

    result = subprocess.run(
        [sys.executable, "-m", "detector", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # --help exits cleanly and lists every option, each with a description.
    assert result.returncode == 0, result.stderr
    for option in OPTIONS[command]:
        assert option in result.stdout, option
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    declared = {s for a in sub._actions for s in a.option_strings} - {"-h", "--help"}
    assert declared == set(OPTIONS[command])
    assert all(a.help for a in sub._actions)


def test_it_extracts_faces_from_a_folder_with_the_cli(tmp_path):
    from detector.cli import main

    root = tmp_path / "tiny"
    (root / "real").mkdir(parents=True)
    (root / "fake").mkdir()
    crops = astronaut_crops(3, 200, seed=4)
    for i, crop in enumerate(crops):
        cv2.imwrite(str(root / "real" / f"r{i}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    fake = self_blend(crops[0], random.Random(0))
    cv2.imwrite(str(root / "fake" / "f0.png"), cv2.cvtColor(fake, cv2.COLOR_RGB2BGR))

    # One face per image, at the requested size, labelled by folder.
    out = tmp_path / "faces.npz"
    assert main(["extract-faces", "--faces", str(root), "--size", "71", "--out", str(out)]) == 0
    faces = FaceSet.load(out)
    assert faces.x.shape == (4, 71, 71, 3)
    assert sorted(faces.y.tolist()) == [0, 0, 0, 1]
    assert set(faces.sources.tolist()) == {"faces:tiny"}

    # --sbi adds one self-blended fake per real face, in its original's group.
    out_sbi = tmp_path / "faces_sbi.npz"
    argv = ["extract-faces", "--faces", str(root), "--size", "71", "--out", str(out_sbi)]
    assert main([*argv, "--sbi"]) == 0
    faces = FaceSet.load(out_sbi)
    assert len(faces) == 7
    sbi = faces.sources == "sbi:faces:tiny"
    assert sbi.sum() == 3 and (faces.y[sbi] == 1).all()
    assert sorted(faces.groups[sbi].tolist()) == ["tiny/r0", "tiny/r1", "tiny/r2"]


def test_the_cli_trains_with_blends_made_anew_every_epoch(tmp_path):
    from detector.cli import main

    reals = np.stack(astronaut_crops(8, SIZE, seed=6))
    data = FaceSet(
        reals,
        np.zeros(8, int),
        np.array(["faces:astro"] * 8),
        np.array([f"a/{i}" for i in range(8)]),
    )
    data.save(tmp_path / "faces.npz")
    argv = ["train", "--data", str(tmp_path / "faces.npz"), "--out", str(tmp_path / "m")]
    argv += ["--work-dir", str(tmp_path / "w"), "--epochs", "1", "--batch-size", "8"]
    argv += ["--val-fraction", "0.25", "--test-fraction", "0", "--seed", "2", "--fresh-sbi"]
    with fast_batchnorm_recalibration():
        assert main(argv) == 0
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    # The training reals stay as they are; their blends are made per epoch, one each.
    assert meta["training"]["sbi"] == "fresh every epoch"
    n_train = meta["training"]["train_faces"]
    assert 0 < n_train < 8 and meta["training"]["fresh_faces_per_epoch"] == n_train
    # No cap: every batch of the training reals and their fresh blends, padded to 8.
    assert meta["training"]["steps_per_epoch"] is None
    assert meta["training"]["steps_run_per_epoch"] == -(-2 * n_train // 8)
    assert meta["training"]["epochs_run"] == meta["training"]["chosen_epoch"] == 1


def test_the_input_size_defaults_to_299_on_a_gpu_and_160_on_a_cpu(tmp_path, monkeypatch, capsys):
    import tensorflow as tf

    from detector.cli import main

    # What the TensorFlow backend reports decides it.
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: [])
    assert not training.gpu_available() and training.default_input_size() == 160
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: [f"{kind}:0"])
    assert training.gpu_available() and training.default_input_size() == 299

    # extract-faces without --size crops at that size, and says why.
    root = tmp_path / "tiny" / "real"
    root.mkdir(parents=True)
    crop = astronaut_crops(1, 200, seed=4)[0]
    cv2.imwrite(str(root / "r0.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    for gpu, size in ((True, 299), (False, 160)):
        monkeypatch.setattr(training, "gpu_available", lambda gpu=gpu: gpu)
        out = tmp_path / f"faces-{size}.npz"
        assert main(["extract-faces", "--faces", str(root.parent), "--out", str(out)]) == 0
        assert FaceSet.load(out).x.shape[1:] == (size, size, 3)
        assert f"input size {size} px" in capsys.readouterr().err


def test_it_calibrates_scores_without_blowing_up_on_separable_data():
    import warnings

    from detector.training import fit_platt

    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.45, 0.46, 0.47, 0.48, 0.49, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a, b = fit_platt(y, p)
    # A steep but finite slope that spreads the squeezed scores apart, in order.
    assert 1 < a <= 20 and np.isfinite(b)
    z = np.log(p / (1 - p))
    q = 1 / (1 + np.exp(-(a * z + b)))
    assert np.all(np.diff(q) > 0) and q[0] < 0.5 < q[-1]


def test_train_refuses_an_averaging_interval_below_one(capsys):
    from detector.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(
            ["train", "--data", "x.npz", "--out", "o", "--average-every", "0"]
        )
    assert exit_.value.code == 2
    assert "--average-every: must be 1 or more, not 0" in capsys.readouterr().err
