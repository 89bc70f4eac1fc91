"""Pipeline speed and memory on a 10 s, 1280x720, 30 fps clip with a face.

    .venv/bin/python bench/pipeline.py [--sizes 299,128] [--runtimes keras,onnx]
                                       [--frames 32] [--naive-frames 300] [--repeat 3]
                                       [--model BUNDLE_DIR]

Prints a table, one row per input size and runtime: time per stage and in total for the
warm pipeline (the best run's stages, and the median total, of --repeat runs after a
warm-up run), cold start (imports, model load and warm-up, in a fresh process), peak resident memory, and the same clip through a naive
per-frame loop (detect and classify every frame at batch 1 with Keras, as the reference
notebooks do) with the same model. Each row runs in its own process, so that its peak
memory is its own. Speed does not depend on the weights, so each input size uses an
untrained Xception unless --model is given. The one-off ONNX export (done once per
bundle and cached) is reported separately from the cold start.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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
b = ModelBundle.load({bundle!r}, runtime={runtime!r}); b.warm_up()
print(time.perf_counter() - t)
"""


def make_clip(path: Path) -> Path:
    from tests.media import moving_frames, write_clip

    return write_clip(path, moving_frames(300, 1280, 720, face_scale=1.0), fps=30)


def naive(clip: Path, bundle_path: str, limit: int) -> float:
    """Every frame: HOG, crop, classify one face at a time (batch 1); seconds for 300."""
    import numpy as np

    from detector.faces import FaceDetector, square_crop
    from detector.model import ModelBundle, preprocess
    from detector.video import iter_frames

    bundle = ModelBundle.load(bundle_path, runtime="keras")
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
    return (time.perf_counter() - t) * 300 / n


def one_row(
    clip: Path, bundle_path: str, runtime: str, out: Path, frames: int, repeat: int
) -> dict:
    from detector.model import ModelBundle
    from detector.pipeline import Options, analyse_video

    bundle = ModelBundle.load(bundle_path, runtime=runtime)  # exports to ONNX if not cached
    cold = float(
        subprocess.run(
            [
                sys.executable,
                "-c",
                COLD.format(root=str(ROOT), bundle=bundle_path, runtime=runtime),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    bundle.warm_up()
    options = Options(frames=frames)
    analyse_video(clip, bundle, options, output_video=out)  # warm caches
    runs = [analyse_video(clip, bundle, options, output_video=out).timings for _ in range(repeat)]
    best = min(runs, key=lambda r: r["total"])
    return {
        "input": bundle.input_size,
        "runtime": bundle.runtime,
        "frames": frames,
        **{k: best.get(k, 0.0) for k in ("read", "detect", "classify", "render", "total")},
        "median": statistics.median(r["total"] for r in runs),
        "cold_start": cold,
        "export": bundle.runtime_record.get("export_seconds", 0.0),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def bundle_for(size: int, tmp: Path) -> str:
    from detector.model import BundleMeta, ModelBundle, build_xception

    path = tmp / f"x{size}"
    ModelBundle(
        BundleMeta(name="bench", version=f"x{size}", input_size=size), build_xception(size)
    ).save(path)
    return str(path)


def child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="299,128")
    ap.add_argument("--runtimes", default="keras,onnx")
    ap.add_argument("--model", default=None, help="bench this bundle instead of untrained ones")
    ap.add_argument(
        "--naive-frames", type=int, default=300, help="frames for the naive loop; 0 skips it"
    )
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per row (best is shown)")
    ap.add_argument(
        "--frames", default="32", help="frames sampled per clip; a list (16,32) adds rows"
    )
    ap.add_argument("--json", default=None)
    ap.add_argument("--row", nargs=3, metavar=("CLIP", "BUNDLE", "RUNTIME"), help=argparse.SUPPRESS)
    ap.add_argument("--naive", nargs=2, metavar=("CLIP", "BUNDLE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row:  # one row, in its own process
        clip, bundle, runtime = args.row
        out = Path(clip).with_suffix(".out.mp4")
        print(json.dumps(one_row(Path(clip), bundle, runtime, out, int(args.frames), args.repeat)))
        return
    if args.naive:
        print(json.dumps({"naive": naive(Path(args.naive[0]), args.naive[1], args.naive_frames)}))
        return

    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ.setdefault("VERITY_CACHE_DIR", str(tmp / "cache"))
        clip = make_clip(tmp / "bench.mp4")
        bundles = (
            [args.model] if args.model else [bundle_for(int(s), tmp) for s in args.sizes.split(",")]
        )
        for bundle in bundles:
            slow = (
                child("--naive", str(clip), bundle, "--naive-frames", str(args.naive_frames))
                if args.naive_frames > 0
                else {"naive": float("nan")}
            )
            for runtime in args.runtimes.split(","):
                for frames in args.frames.split(","):
                    row = child(
                        "--row",
                        str(clip),
                        bundle,
                        runtime,
                        "--frames",
                        frames,
                        "--repeat",
                        str(args.repeat),
                    )
                    row["naive"] = slow["naive"]
                    row["speedup"] = slow["naive"] / row["total"]
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    head = (
        f"{'input':>5} | {'runtime':>7} | {'frames':>6} | {'read':>5} | {'detect':>6} | {'classify':>8} | "
        f"{'render':>6} | {'total':>6} | {'median':>6} | {'cold start':>10} | {'naive loop':>10} | "
        f"{'speed-up':>8} | {'peak RSS':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['input']:>5} | {r['runtime']:>7} | {r['frames']:>6} | {r['read']:>5.2f} | {r['detect']:>6.2f} | "
            f"{r['classify']:>8.2f} | {r['render']:>6.2f} | {r['total']:>6.2f} | {r['median']:>6.2f} | "
            f"{r['cold_start']:>10.2f} | {r['naive']:>10.1f} | {r['speedup']:>7.1f}x | "
            f"{r['peak_rss_gib']:>6.2f} GiB"
        )
    print(
        "(seconds; 10 s 1280x720 30 fps clip, annotated H.264 output of all 300 frames; "
        "the naive loop is Keras at batch 1)"
    )
    exports = {r["input"]: r["export"] for r in rows if r["export"]}
    for size, s in exports.items():
        print(f"one-off ONNX export and parity check at {size} px: {s:.1f} s (cached afterwards)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
