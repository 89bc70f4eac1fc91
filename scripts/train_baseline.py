"""Train the shipped default model from ../shared/data (read at run time, never committed).

    .venv/bin/python scripts/train_baseline.py [--size 128] [--epochs 6] [--steps 150]

Trains on the MesoNet face set (internet deepfakes) and holds out whole sources it
never sees in training: the FaceForensics++ c40 sample (all four methods, scored per
video), the CIPLab Photoshop composites, and StyleGAN3 fakes against LFW reals.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from detector import training
from detector.model import ModelBundle

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--work", default="var/training/baseline")
    ap.add_argument("--out", default="models/default")
    ap.add_argument("--version", default="baseline-1")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / f"faces-{args.size}.npz"
    t0 = time.time()
    if cache.exists():
        meso = training.FaceSet.load(cache)
    else:
        items = training.folder_items(DATA / "faces" / "mesonet", "mesonet")
        meso = training.extract_faces(items, args.size, detect_images=False)
        meso.save(cache)
    print(f"mesonet faces: {len(meso)} ({time.time() - t0:.0f}s)")
    split = np.array([training.split_of(g, val=0.15, test=0.0) for g in meso.groups])
    tr, va = meso.subset(split == "train"), meso.subset(split == "val")
    print(f"train {len(tr)} val {len(va)}")
    cfg = training.TrainConfig(
        input_size=args.size,
        epochs=args.epochs,
        batch_size=args.batch,
        steps_per_epoch=args.steps,
        extra={"sources": ["faces:mesonet"]},
    )

    def on_epoch(epoch, logs):
        print(f"epoch {epoch}: " + " ".join(f"{k}={v:.4f}" for k, v in logs.items()), flush=True)

    bundle, history = training.train(
        tr, va, cfg, work / "run", on_epoch=on_epoch, version=args.version
    )
    out = Path(args.out)
    bundle.save(out)
    bundle = ModelBundle.load(out)  # measure what ships: the float16 weights

    held: dict = {}
    held_cache = work / f"heldout-{args.size}.npz"
    if held_cache.exists():
        held_set = training.FaceSet.load(held_cache)
    else:
        sets = [
            training.extract_faces(
                training.ffpp_items(DATA / "ffpp-c40"), args.size, frames_per_video=16
            ),
            training.extract_faces(
                training.folder_items(DATA / "faces" / "ciplab", "ciplab"), args.size
            ),
            training.extract_faces(
                training.folder_items(DATA / "faces" / "stylegan3", "stylegan3"),
                args.size,
                detect_images=True,
            ),
            training.extract_faces(
                training.folder_items(DATA / "faces" / "lfw", "lfw")[:300], args.size
            ),
        ]
        held_set = training.FaceSet.concat(sets)
        held_set.save(held_cache)
    scores = bundle.predict(held_set.x)
    thr = bundle.meta.threshold
    is_ffpp = np.char.startswith(held_set.sources.astype(str), "ffpp:")
    held["ffpp_c40"] = training.evaluate_scores(held_set.subset(is_ffpp), scores[is_ffpp], thr)
    for name, prefixes in {
        "ciplab": ("faces:ciplab",),
        "stylegan3_vs_lfw": ("faces:stylegan3", "faces:lfw"),
    }.items():
        m = np.isin(held_set.sources, prefixes)
        held[name] = training.evaluate_scores(held_set.subset(m), scores[m], thr)
    held["all_unseen"] = training.evaluate_scores(held_set, scores, thr)
    bundle.meta.metrics["held_out"] = held
    bundle.save(out)
    training.save_curves(history, (held_set.y, scores), work / "curves")
    print(
        json.dumps(
            {
                k: {kk: vv for kk, vv in v["frame"].items() if kk != "confusion"}
                for k, v in held.items()
            },
            indent=1,
        )
    )
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
