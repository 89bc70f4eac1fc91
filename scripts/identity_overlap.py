"""How far the held-out figures rest on people the model saw: LFW was split by image, not
by person, in scripts/train_default.py (its first 600 images train, the rest are held out),
so the cut fell inside one person's photos. This lists the held-out LFW images of people
with training images too, and scores the shipped model on the held-out sets with and
without them. Reads ../shared/data at run time.

    PYTHONPATH=. .venv/bin/python scripts/identity_overlap.py [--bundle models/default]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from detector import training
from detector.model import ModelBundle
from scripts import train_default

_NUMBER = re.compile(r"_\d+$")


def person(path_or_group: str) -> str:
    """LFW's Name_0001.jpg (or the group lfw/Name_0001) -> Name."""
    return _NUMBER.sub("", Path(path_or_group).stem)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default="models/default")
    ap.add_argument("--work", default="var/training/gpu", help="train_default's face cache")
    args = ap.parse_args()
    bundle = ModelBundle.load(args.bundle)
    s, work = bundle.input_size, Path(args.work)
    lfw = training.folder_items(train_default.DATA / "faces" / "lfw", "lfw")
    pool = [person(it.path) for it in lfw[:600]]  # training and validation, split by image
    in_val = [training.split_of(it.group, seed=3, val=0.15, test=0.0) == "val" for it in lfw[:600]]
    trained = {p for p, v in zip(pool, in_val, strict=True) if not v}
    val = [p for p, v in zip(pool, in_val, strict=True) if v]
    print(
        f"LFW validation images (before face detection): {len(val)}, of which "
        f"{sum(p in trained for p in val)} are of people with training images"
    )
    trained = set(pool)  # held-out images against everyone a stage could have seen
    held = [person(it.path) for it in lfw[600:]]
    seen = sorted({p for p in held if p in trained})
    print(
        f"held-out LFW: {len(held)} images of {len(set(held))} people; "
        f"{sum(p in trained for p in held)} images of people with training images: {seen}"
    )
    sets = train_default.held_out_sets(work, s, train_default.ffpp_faces(work, s), lfw)
    results = train_default.scored(bundle, sets)
    thr = bundle.meta.threshold
    print("| data, per face | n | ROC AUC (95% CI) | n without them | ROC AUC (95% CI) |")
    print("|---|---:|---:|---:|---:|")
    for key in ("stylegan3_vs_unseen_reals", "all_unseen"):
        data, scores = results[key]
        keep = np.array(
            [not (g.startswith("lfw/") and person(g) in trained) for g in data.groups.tolist()]
        )
        cells = []
        for d, sc in ((data, scores), (data.subset(keep), scores[keep])):
            m = training.evaluate_scores(d, sc, thr)["frame"]
            lo, hi = m["roc_auc_ci"]
            cells += [str(m["n"]), f"{m['roc_auc']:.3f} ({lo:.2f}–{hi:.2f})"]
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
