"""Xception training speed on this CPU: Verity's training loop against Keras' fit.

    .venv/bin/python bench/training.py [--size 128] [--batch 16] [--steps 12]
                                       [--loops verity,keras-fit,step] [--allocators glibc]

Each row trains an untrained Xception in its own process and reports images per second,
the share of CPU time spent in the kernel, and minor page faults per training step.

Loops:
- `verity`: `detector.training.train` as a real run uses it (augmentation, class
  weights, a pool of --pool faces), timed over its second epoch of --steps batches;
- `keras-fit`: `model.fit` fed by a `keras.utils.PyDataset` of the same batches, as
  Verity trained before 2026-11-25, timed over its second epoch;
- `step`: `train_on_batch` on one fixed batch, the floor.

Allocators (optional rows): glibc as it is, TensorFlow's pooling CPU allocator
(`TF_CPU_ALLOCATOR_USE_BFC=true`) and jemalloc (`LD_PRELOAD`, Debian's libjemalloc2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"

COMMON = """
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np
marks = []
def mark():
    marks.append((time.perf_counter(), os.times(), resource.getrusage(resource.RUSAGE_SELF)))
def report(images):
    (t0, c0, r0), (t1, c1, r1) = marks[-2:]
    user, system = c1.user - c0.user, c1.system - c0.system
    print(json.dumps({{
        "images_per_s": images / (t1 - t0),
        "kernel_share": system / max(user + system, 1e-9),
        "faults_per_step": (r1.ru_minflt - r0.ru_minflt) / {steps},
    }}), flush=True)
"""

LOOPS = {
    "step": """
import keras
from detector.model import build_xception, preprocess
keras.utils.set_random_seed(0)
m = build_xception({size})
m.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x = preprocess(rng.integers(0, 255, ({batch}, {size}, {size}, 3), dtype=np.uint8))
y = rng.integers(0, 2, {batch})
for _ in range(3):
    m.train_on_batch(x, y)
mark()
for _ in range({steps}):
    m.train_on_batch(x, y)
mark()
report({steps} * {batch})
""",
    "verity": """
import tempfile
from detector.training import FaceSet, TrainConfig, train
rng = np.random.default_rng(0)
def faces(n, prefix):
    return FaceSet(
        rng.integers(0, 255, (n, {size}, {size}, 3), dtype=np.uint8),
        np.arange(n) % 2,
        np.array(["bench"] * n),
        np.array([f"{{prefix}}/{{i}}" for i in range(n)]),
    )
def on_epoch(epoch, logs):
    mark()
    if epoch == 2:
        report({steps} * {batch})
        os._exit(0)
cfg = TrainConfig(input_size={size}, epochs=2, batch_size={batch}, steps_per_epoch={steps},
                  learning_rate=1e-4, patience=5)
train(faces({pool}, "t"), faces({batch}, "v"), cfg, tempfile.mkdtemp(), on_epoch=on_epoch)
""",
    "keras-fit": """
import random
import keras
from detector.model import build_xception, preprocess
from detector.training import augment
keras.utils.set_random_seed(0)
m = build_xception({size})
m.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
          metrics=["accuracy"])
rng = np.random.default_rng(0)
pool = rng.integers(0, 255, ({pool}, {size}, {size}, 3), dtype=np.uint8)
labels = np.arange({pool}) % 2
class Batches(keras.utils.PyDataset):
    def __init__(self):
        super().__init__()
        self.rng = random.Random(0)
    def __len__(self):
        return {steps}
    def __getitem__(self, i):
        idx = np.array(self.rng.sample(range({pool}), {batch}))
        return preprocess(np.stack([augment(pool[j], self.rng) for j in idx])), labels[idx]
class Marks(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        mark()
m.fit(Batches(), epochs=2, class_weight={{0: 1.0, 1: 1.0}}, callbacks=[Marks()], verbose=0)
report({steps} * {batch})
""",
}


def environment(allocator: str) -> dict[str, str] | None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("LD_PRELOAD", None)
    env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    if allocator == "tf-bfc":
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    elif allocator == "jemalloc":
        if not Path(JEMALLOC).exists():
            return None
        env["LD_PRELOAD"] = JEMALLOC
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, help="input size in px (default 128)")
    ap.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    ap.add_argument("--steps", type=int, default=12, help="timed batches (default 12)")
    ap.add_argument("--pool", type=int, default=2000, help="faces in the data pool")
    ap.add_argument("--loops", default="verity,keras-fit,step", help="rows: " + ",".join(LOOPS))
    ap.add_argument("--allocators", default="glibc", help="glibc, tf-bfc, jemalloc")
    args = ap.parse_args()
    print(f"Xception training, {args.size} px, batches of {args.batch}, {args.steps} timed")
    print(f"{'loop':10} {'allocator':10} {'images/s':>9} {'kernel CPU':>11} {'faults/step':>12}")
    for loop in args.loops.split(","):
        code = COMMON.format(root=str(ROOT), steps=args.steps) + LOOPS[loop].format(
            size=args.size, batch=args.batch, steps=args.steps, pool=args.pool
        )
        for allocator in args.allocators.split(","):
            env = environment(allocator)
            if env is None:
                print(f"{loop:10} {allocator:10} (not installed)")
                continue
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True
            )
            if out.returncode:
                raise SystemExit(f"{loop}/{allocator} failed:\n{out.stderr[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{loop:10} {allocator:10} {r['images_per_s']:>9.1f} {r['kernel_share']:>10.0%} "
                f"{r['faults_per_step']:>12,.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
