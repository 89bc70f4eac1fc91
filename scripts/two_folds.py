"""The recipe's two folds on FaceForensics++ identities it never saw. Reads ../shared/data
at run time.

The sample has two identity groups, {183, 253} and {469, 481}. Fold A (the shipped model,
v2.1) trained on the first and is scored on the second; fold B (the same three stages with
`--train-ffpp ffpp/469`) the other way round. Each fold is scored by its own model on its
own held-out clips; the two-fold figure is the mean of the two AUCs, with a bootstrap that
resamples whole clips within each fold (`detector.metrics.mean_auc`). Per face, per video
(the mean score of a clip's faces) and per method (each method against the originals of
the same identities).

    PYTHONPATH=. .venv/bin/python scripts/two_folds.py --fold-a models/default \\
        --fold-b var/models/foldB-2.1 --work var/training/foldB-299
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from detector import training
from detector.metrics import mean_auc
from detector.model import ModelBundle
from detector.training import FaceSet
from scripts import train_default


def fold_rows(data: FaceSet, scores: np.ndarray) -> dict[str, tuple]:
    """(labels, scores, clips) for each row of the table: every face, every clip (mean
    score), and each method against the originals."""
    rows: dict[str, tuple] = {"per face": (data.y, scores, data.video_ids)}
    rows["per video"] = training.clip_scores(data, scores)
    originals = data.sources == "ffpp:original"
    for method in sorted(set(data.sources.tolist()) - {"ffpp:original"}):
        m = originals | (data.sources == method)
        rows[method.split(":")[1] + ", per face"] = (data.y[m], scores[m], data.video_ids[m])
    return rows


def fmt(r: dict[str, Any] | None) -> str:
    if r is None:
        return "n/a"
    ci = f" ({r['ci'][0]:.2f}–{r['ci'][1]:.2f})" if r["ci"] else ""
    return f"{r['mean']:.3f}{ci}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fold-a", default="models/default", help="trained on ffpp/183")
    ap.add_argument("--fold-b", default="var/models/foldB-2.1", help="trained on ffpp/469")
    ap.add_argument(
        "--work",
        default="var/training/foldB-299",
        help="work folder holding (or to hold) the FaceForensics++ faces at the input size",
    )
    ap.add_argument("--out", default="var/two-folds/two_folds.json")
    args = ap.parse_args()
    bundles = {"A": ModelBundle.load(args.fold_a), "B": ModelBundle.load(args.fold_b)}
    trained = {"A": train_default.FFPP_GROUPS[0], "B": train_default.FFPP_GROUPS[1]}
    sizes = {b.input_size for b in bundles.values()}
    if len(sizes) != 1:
        raise SystemExit(f"the two folds' input sizes differ: {sorted(sizes)}")
    s = sizes.pop()
    work = Path(args.work)
    ffpp = train_default.ffpp_faces(work, s)
    lfw_items = training.folder_items(train_default.DATA / "faces" / "lfw", "lfw")
    per_fold: dict[str, dict[str, tuple]] = {}
    manipulations: dict[str, tuple[FaceSet, np.ndarray]] = {}
    for fold, bundle in bundles.items():
        held = train_default.held_out_sets(work, s, ffpp, lfw_items, trained[fold])
        held.pop("stylegan3_vs_unseen_reals")
        # Its unseen face manipulations together: its held-out FF++ clips (first), the c23
        # pair and CIPLab, as in the model card; each face scored once.
        manip = FaceSet.concat(list(held.values()))
        scores = bundle.predict(manip.x)
        manipulations[fold] = (manip, scores)
        ffpp_held = held["ffpp_c40_unseen_identities"]
        per_fold[fold] = fold_rows(ffpp_held, scores[: len(ffpp_held)])
        n_clips = len(set(ffpp_held.video_ids.tolist()))
        print(f"fold {fold}: {bundle.meta.version}, {len(ffpp_held)} faces of {n_clips} clips")
    out: dict[str, Any] = {}
    print("| FaceForensics++ c40, unseen identities | fold A | fold B | mean of the two (95% CI) |")
    print("|---|---:|---:|---:|")
    for row in per_fold["A"]:
        r = mean_auc([per_fold["A"][row], per_fold["B"][row]])
        a = mean_auc([per_fold["A"][row]])
        b = mean_auc([per_fold["B"][row]])
        out[row] = {"two_folds": r, "fold_a": a, "fold_b": b}
        print(f"| {row} | {fmt(a)} | {fmt(b)} | {fmt(r)} |")
    # The c23 pair and CIPLab are the same clips in both folds, so the folds are not
    # independent here: each is reported on its own, not averaged.
    print("\n| fold | unseen face manipulations only, per face (95% CI) |\n|---|---:|")
    for fold, (manip, scores) in manipulations.items():
        r = mean_auc([(manip.y, scores, manip.video_ids)])
        out[f"face_manipulations_fold_{fold.lower()}"] = r
        print(f"| {fold} ({bundles[fold].meta.version}, {len(manip)} faces) | {fmt(r)} |")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
