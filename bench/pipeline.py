"""Pipeline speed and memory on a 10 s, 1280x720, 30 fps clip with a face.

    .venv/bin/python bench/pipeline.py [--sizes 299,128] [--naive-frames 300]

Prints a table: time per stage and in total for the warm pipeline, cold start
(imports, model load, warm-up, in a fresh process), peak resident memory, and the
same clip through a naive per-frame loop (detect and classify every frame at
batch 1, as the reference notebooks do) with the same model.
Speed does not depend on the weights, so each input size uses an untrained
Xception unless --model is given.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

COLD = """
import time, sys; t = time.perf_counter()
sys.path.insert(0, {root!r})
from detector.model import ModelBundle
from detector.pipeline import analyse_video
b = ModelBundle.load({bundle!r}); b.warm_up()
print(time.perf_counter() - t)
"""


def make_clip(path: Path) -> Path:
    from tests.media import moving_frames, write_clip

    return write_clip(path, moving_frames(300, 1280, 720, face_scale=1.0), fps=30)


def naive(clip: Path, bundle, limit: int) -> tuple[float, int]:
    """Every frame: HOG, crop, classify one face at a time (batch 1)."""
    import numpy as np

    from detector.faces import FaceDetector, square_crop
    from detector.model import preprocess
    from detector.video import iter_frames

    det = FaceDetector("hog")
    model = bundle.model
    t = time.perf_counter()
    n = 0
    for i, _t, img in iter_frames(clip):
        if i >= limit:
            break
        for box in det.detect(img):
            crop = square_crop(img, box, bundle.input_size)
            model.predict(preprocess(crop[np.newaxis]), verbose=0)
        n += 1
    return time.perf_counter() - t, n


def bundle_for(size: int, tmp: Path, model: str | None):
    from detector.model import BundleMeta, ModelBundle, build_xception

    if model:
        return ModelBundle.load(model), model
    path = tmp / f"x{size}"
    ModelBundle(
        BundleMeta(name="bench", version=f"x{size}", input_size=size), build_xception(size)
    ).save(path)
    return ModelBundle.load(path), str(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="299,128")
    ap.add_argument("--model", default=None, help="bench this bundle instead of untrained ones")
    ap.add_argument("--naive-frames", type=int, default=300)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from detector.pipeline import Options, analyse_video

    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        clip = make_clip(tmp / "bench.mp4")
        sizes = [None] if args.model else [int(s) for s in args.sizes.split(",")]
        for size in sizes:
            bundle, path = bundle_for(size, tmp, args.model)
            cold = float(
                subprocess.run(
                    [sys.executable, "-c", COLD.format(root=str(ROOT), bundle=path)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            bundle.warm_up()
            analyse_video(clip, bundle, Options(), output_video=tmp / "warm.mp4")  # warm caches
            runs = [
                analyse_video(clip, bundle, Options(), output_video=tmp / "out.mp4").timings
                for _ in range(2)
            ]
            best = min(runs, key=lambda r: r["total"])
            naive_s, naive_n = naive(clip, bundle, args.naive_frames)
            naive_total = naive_s * 300 / naive_n
            rows.append(
                {
                    "input": bundle.input_size,
                    **{
                        k: best.get(k, 0.0)
                        for k in ("read", "detect", "classify", "render", "total")
                    },
                    "cold_start": cold,
                    "naive": naive_total,
                    "speedup": naive_total / best["total"],
                    "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
                }
            )
    head = f"{'input':>5} | {'read':>5} | {'detect':>6} | {'classify':>8} | {'render':>6} | {'total':>6} | {'cold start':>10} | {'naive loop':>10} | {'speed-up':>8} | {'peak RSS':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['input']:>5} | {r['read']:>5.2f} | {r['detect']:>6.2f} | {r['classify']:>8.2f} | {r['render']:>6.2f} | "
            f"{r['total']:>6.2f} | {r['cold_start']:>10.2f} | {r['naive']:>10.1f} | {r['speedup']:>7.1f}x | {r['peak_rss_gib']:>6.2f} GiB"
        )
    print(
        "(seconds; 10 s 1280x720 30 fps clip, 32 sampled frames, annotated H.264 output of all 300 frames)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
