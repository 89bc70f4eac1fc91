"""Peak memory of one analysis against the clip's resolution and the number of samples.

    .venv/bin/python bench/sample_memory.py [--rows 1280x720:32,3840x2160:32,3840x2160:128]

Each row writes a clip of that size (the astronaut photo scaled to a third of the frame's
height, drifting, as many frames as samples, at 25 fps; cached in var/bench/sample-memory),
then runs `python -m detector analyse CLIP --frames N --no-video` on it in a child process,
as a user would, and reports the child's peak resident memory (ru_maxrss, from wait4) and
wall time. The model is the shipped bundle, through ONNX Runtime once its export is cached
(the first row may pay for the export; run the table twice and read the second).

"frames as arrays" is what holding every sampled frame at once costs (n x w x h x 3
bytes): what the pipeline held before it streamed its samples.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "var" / "bench" / "sample-memory"


def make_clip(path: Path, width: int, height: int, n: int) -> Path:
    if path.exists():
        return path
    from skimage import data

    face = data.astronaut()
    side = height // 3
    face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    tmp = path.with_suffix(".part.mp4")
    container = av.open(str(tmp), mode="w")
    stream = container.add_stream("libx264", rate=Fraction(25))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"preset": "ultrafast"}
    for i in range(n):
        canvas = np.full((height, width, 3), 90, np.uint8)
        x = (i * 4) % max(1, width - side)
        canvas[height // 3 : height // 3 + side, x : x + side] = face
        for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    tmp.rename(path)
    return path


def run(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB and exit status of one command."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    code = os.waitstatus_to_exitcode(status)
    if code:
        sys.stderr.write(proc.stderr.read().decode()[-2000:] if proc.stderr else "")
    return wall, usage.ru_maxrss / 1024, code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", default="1280x720:32,3840x2160:32,3840x2160:128")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    print("| clip | samples | frames as arrays | peak RSS | wall |")
    print("|---|---:|---:|---:|---:|")
    for row in args.rows.split(","):
        size, n = row.split(":")
        w, h = (int(x) for x in size.split("x"))
        clip = make_clip(WORK / f"{w}x{h}-{n}.mp4", w, h, int(n))
        cmd = [sys.executable, "-m", "detector", "analyse", str(clip), "--frames", n, "--no-video"]
        wall, rss, code = run(cmd)
        held = int(n) * w * h * 3 / 2**30
        status = "" if code == 0 else f" (exit {code})"
        print(f"| {w}x{h} | {n} | {held:.2f} GiB | {rss / 1024:.2f} GiB{status} | {wall:.1f} s |")


if __name__ == "__main__":
    main()
