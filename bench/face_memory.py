"""Peak memory of the training commands against the size of the face dataset.

    .venv/bin/python bench/face_memory.py [--size 160] [--faces 2000,8000]
                                          [--steps extract,train,evaluate]

For each dataset size the benchmark writes that many aligned face images (JPEG, half
real, half fake; each image its own group) into var/bench/face-memory, then runs each
step as the user would, each in its own process, and reports the process's peak
resident memory (ru_maxrss) and wall time:

- `extract`: `python -m detector extract-faces --faces DIR --aligned --size S`;
- `train`: `python -m detector train` on that file for one epoch of two batches (so the
  row is about the data, not the optimiser): load, split by video, train, calibrate on
  the validation faces and score the test faces;
- `evaluate`: `python -m detector evaluate` of the trained bundle on the whole file, twice.
  The first use of a bundle exports it for ONNX Runtime and checks the export against
  Keras, in a child process (README, "How it works" step 4); that row ("evaluate 1st") is
  that one-time cost. The second row finds the verified export in the cache, as every
  later use of the bundle does.

Peak RSS is `ru_maxrss` as `wait4` reports it: the largest of the process and of the
children it waited for, so the export child counts in the first evaluate row.

"face data" is the size of the crops as uint8 arrays (n x S x S x 3 bytes): what a step
that holds the dataset in memory needs at least once, before any copy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "var" / "bench" / "face-memory"


def make_images(folder: Path, n: int, size: int) -> None:
    if (folder / ".done").exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8), (size, size))
    for i in range(n):
        label = "fake" if i % 2 else "real"
        (folder / label).mkdir(parents=True, exist_ok=True)
        noise = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / label / f"{i:06d}.jpg"), base + noise)
    (folder / ".done").touch()


def run(cmd: list[str], cache: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB and exit status of one command."""
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(ROOT),
        "VERITY_CACHE_DIR": str(cache),
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code:
        print(err[-2000:], file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=160, help="crop size in px (default 160)")
    ap.add_argument("--faces", default="2000,8000", help="dataset sizes, comma-separated")
    ap.add_argument("--steps", default="extract,train,evaluate", help="rows to run")
    args = ap.parse_args()
    steps = args.steps.split(",")
    py = sys.executable
    print(f"face dataset memory, {args.size} px crops")
    print(f"{'faces':>6} {'face data':>10} {'step':12} {'peak RSS':>9} {'wall':>7}")
    for n in (int(v) for v in args.faces.split(",")):
        folder = WORK / f"images-{n}-{args.size}"
        make_images(folder, n, args.size)
        data = WORK / f"faces-{n}-{args.size}.npz"
        bundle, work = WORK / f"bundle-{n}", WORK / f"work-{n}"
        commands = {
            "extract": [py, "-m", "detector", "extract-faces", "--faces", str(folder)]
            + ["--aligned", "--size", str(args.size), "--out", str(data)],
            "train": [py, "-m", "detector", "train", "--data", str(data), "--out", str(bundle)]
            + ["--work-dir", str(work), "--epochs", "1", "--steps-per-epoch", "2"],
            "evaluate": [py, "-m", "detector", "evaluate", "--model", str(bundle)]
            + ["--data", str(data)],
        }
        mib = n * args.size * args.size * 3 / 2**20
        cache = WORK / f"cache-{n}"
        rows = [(s, s) for s in steps if s != "evaluate"]
        if "evaluate" in steps:
            rows += [("evaluate 1st", "evaluate"), ("evaluate", "evaluate")]
        for name, step in rows:
            if step == "train":
                shutil.rmtree(work, ignore_errors=True)
            if name == "evaluate 1st":
                shutil.rmtree(cache, ignore_errors=True)
            wall, rss, code = run(commands[step], cache)
            note = "" if code == 0 else f"  (exit {code})"
            print(f"{n:>6} {mib:>7.0f} MiB {name:12} {rss:>5.0f} MiB {wall:>6.1f}s{note}")


if __name__ == "__main__":
    main()
