"""Runners for a bundle's classifier: Keras (the reference) and ONNX Runtime (faster on CPU).

ONNX Runtime is used only when it agrees with Keras: on first use the Keras model is
exported with tf2onnx, both run the same probe batch, and the export is kept only if every
probability differs by at most `PARITY_TOLERANCE`. The verified export is cached under
`$VERITY_CACHE_DIR/onnx/` (default `~/.cache/verity`), keyed by the bundle's file
contents, so a later process loads it without importing TensorFlow at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import RuntimeUnavailable

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnx", "keras")
PARITY_TOLERANCE = 1e-3
PROBE_SIZE = 16
ONNX_OPSET = 17
CACHE_KEEP = 6
ONNX_BATCH = 4

# Takes preprocessed float32 crops (n, s, s, 3) and returns softmax rows (n, 2).
Runner = Callable[[np.ndarray], np.ndarray]


def cache_dir() -> Path:
    return Path(os.environ.get("VERITY_CACHE_DIR") or Path.home() / ".cache" / "verity")


def bundle_key(path: Path) -> str:
    """A digest of the bundle's files: a retrained bundle never reuses a stale export."""
    h = hashlib.sha256()
    for name in ("meta.json", "weights.npz"):
        with open(path / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:24]


def _batched(run_batch: Callable[[np.ndarray], np.ndarray], batch_size: int, pad: bool) -> Runner:
    """Run `run_batch` over slices of at most `batch_size`, padding the last one if asked."""

    def run(x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), 2), np.float32)
        for start in range(0, len(x), batch_size):
            chunk = np.ascontiguousarray(x[start : start + batch_size], np.float32)
            m = len(chunk)
            if pad and m < batch_size:
                filler = np.zeros((batch_size - m, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, filler])
            out[start : start + m] = run_batch(chunk)[:m]
        return out

    return run


def keras_runner(model: Any, input_size: int, batch_size: int) -> Runner:
    """The model behind one fixed-shape tf.function: Keras retraces for every new shape.

    On another Keras backend (JAX or PyTorch, for training on a GPU machine), Keras's
    own predict_on_batch, on batches padded to the same fixed shape.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return _batched(
            lambda chunk: np.asarray(model.predict_on_batch(chunk)), batch_size, pad=True
        )

    import tensorflow as tf

    spec = tf.TensorSpec([batch_size, input_size, input_size, 3], tf.float32)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return _batched(lambda chunk: fn(chunk).numpy(), batch_size, pad=True)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:  # an install without the runtime
        raise RuntimeUnavailable(
            "ONNX Runtime is not installed (pip install onnxruntime)."
        ) from exc
    return onnxruntime


def onnx_runner(model_file: Path, batch_size: int) -> Runner:
    """An ONNX Runtime session on every core; batches of any size (no retracing here).

    Batches are at most ONNX_BATCH: ORT's memory grows with the batch (at 299 px a
    batch of 16 peaked at 1.5 GiB, one of 4 at 0.56 GiB) and the time per crop does not
    (85-88 ms either way on this project's 2 cores).
    """
    ort = _onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return _batched(
        lambda chunk: session.run(None, {name: chunk})[0], min(batch_size, ONNX_BATCH), pad=False
    )


def export_onnx(model: Any, input_size: int, out: Path) -> Path:
    """Write the Keras model as ONNX (batch dimension left free)."""
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as exc:
        raise RuntimeUnavailable("tf2onnx is not installed (pip install tf2onnx).") from exc
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    spec = tf.TensorSpec([None, input_size, input_size, 3], tf.float32, name="crops")
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=ONNX_OPSET)
    out.write_bytes(proto.SerializeToString())
    return out


def probe_batch(input_size: int, n: int = PROBE_SIZE, seed: int = 0) -> np.ndarray:
    """Preprocessed inputs over the whole [-1, 1] range: noise, and colour gradients."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, input_size, input_size, 3)).astype(np.float32)
    ramp = np.linspace(-1, 1, input_size, dtype=np.float32)
    x[n // 2 :] = ramp[None, :, None, None] * rng.uniform(0.2, 1, (n - n // 2, 1, 1, 3))
    return x


def parity(reference: Runner, candidate: Runner, input_size: int) -> float:
    """Largest absolute difference between the two runners' probabilities on the probe."""
    x = probe_batch(input_size)
    return float(np.abs(reference(x) - candidate(x)).max())


def _cached(bundle_path: Path | None) -> tuple[Path, Path] | None:
    if bundle_path is None:
        return None
    key = bundle_key(bundle_path)
    folder = cache_dir() / "onnx"
    return folder / f"{key}.onnx", folder / f"{key}.json"


def _verified(paths: tuple[Path, Path] | None, tolerance: float) -> dict[str, Any] | None:
    if paths is None or not (paths[0].exists() and paths[1].exists()):
        return None
    try:
        record = json.loads(paths[1].read_text())
    except (OSError, ValueError):  # unreadable or pruned meanwhile: as if never exported
        return None
    if not isinstance(record, dict):
        return None
    return record if record.get("max_abs_diff", 1.0) <= tolerance else None


def load_onnx(
    bundle_path: Path | None,
    input_size: int,
    batch_size: int,
    keras_model: Callable[[], Any],
) -> tuple[Runner, dict[str, Any]]:
    """An ONNX runner for the bundle, verified against Keras; raises RuntimeUnavailable.

    1. A cached export whose record says it passed parity is used as it is.
    2. Otherwise a child process exports and checks it (TensorFlow and tf2onnx peak at
       several GiB while converting, which a serving worker should not keep), and the
       cached result is loaded. If the child dies, RuntimeUnavailable says so (the
       "auto" runtime then falls back to Keras).
    3. A bundle with no folder, or a cache the child could not write, is exported here.
    """
    _onnxruntime()  # before paying for an export that could not run
    paths = _cached(bundle_path)
    record = _verified(paths, PARITY_TOLERANCE)
    if paths and record is None:
        proc = subprocess.run(
            [*EXPORT_COMMAND, str(bundle_path)]
            + ["--tolerance", repr(PARITY_TOLERANCE), "--batch-size", str(batch_size)],
            capture_output=True,
            text=True,
        )
        if proc.returncode == EXIT_DISAGREES:
            raise RuntimeUnavailable(proc.stderr.strip().splitlines()[-1])
        if proc.returncode != 0:
            # Killed (for memory, most likely: tf2onnx peaks near 6 GiB at 299 px) or
            # broken: never retry here, where the serving worker would carry that peak.
            how = (
                f"was killed by signal {-proc.returncode}"
                if proc.returncode < 0
                else f"failed with exit status {proc.returncode}"
            )
            log.warning("the ONNX export child %s:\n%s", how, proc.stderr[-2000:])
            raise RuntimeUnavailable(
                f"the ONNX export {how} (out of memory?); `python -m detector.runtime "
                f"{bundle_path}` shows why"
            )
        record = _verified(paths, PARITY_TOLERANCE)
    if paths and record is not None:
        runner = onnx_runner(paths[0], batch_size)
        with contextlib.suppress(OSError):  # in use: newest for prune(), which keeps the newest
            os.utime(paths[0])
        return runner, record
    return export_verified(paths, input_size, batch_size, keras_model(), PARITY_TOLERANCE)


def export_verified(
    paths: tuple[Path, Path] | None,
    input_size: int,
    batch_size: int,
    model: Any,
    tolerance: float,
) -> tuple[Runner, dict[str, Any]]:
    """Export, run the probe through both, and cache the export if they agree.

    The export is written into a private folder beside the cache and renamed into place,
    so a concurrent process never sees half a file. The session checked here is the one
    returned: it holds the model in memory, wherever the file goes afterwards.
    """
    t = time.perf_counter()
    folder = paths[0].parent if paths else None
    try:
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = None
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        exported = export_onnx(model, input_size, Path(tmp) / "model.onnx")
        candidate = onnx_runner(exported, batch_size)
        diff = parity(keras_runner(model, input_size, batch_size), candidate, input_size)
        record = {
            "max_abs_diff": diff,
            "tolerance": tolerance,
            "probe": PROBE_SIZE,
            "opset": ONNX_OPSET,
            "export_seconds": round(time.perf_counter() - t, 2),
        }
        if diff > tolerance:
            raise RuntimeUnavailable(
                f"ONNX Runtime disagrees with Keras by {diff:.2e} (tolerance "
                f"{tolerance:.0e}) on this model; use the Keras runtime."
            )
        if paths is None or folder is None:
            return candidate, record
        try:
            # The record goes in by rename too: a full disk leaves no half-written record.
            staged = Path(tmp) / "record.json"
            staged.write_text(json.dumps(record, indent=2) + "\n")
            os.replace(exported, paths[0])
            os.replace(staged, paths[1])
        except OSError as exc:  # a read-only cache only costs the next process an export
            log.warning("could not cache the ONNX export in %s: %s", folder, exc)
            return candidate, record
    log.info("exported to ONNX (max |diff| %.1e)", diff)
    prune(folder)
    return candidate, record


def prune(folder: Path, keep: int = CACHE_KEEP) -> None:
    """Keep the newest `keep` exports: every retrained bundle adds one of about 80 MB."""

    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except FileNotFoundError:  # another process pruned it first
            return 0.0

    exports = sorted(folder.glob("*.onnx"), key=mtime, reverse=True)
    for old in exports[keep:]:
        for f in (old, old.with_suffix(".json")):
            f.unlink(missing_ok=True)


EXIT_DISAGREES = 3
EXPORT_COMMAND = [sys.executable, "-m", "detector.runtime"]


def main(argv: list[str] | None = None) -> int:
    """`python -m detector.runtime BUNDLE_DIR`: export, verify and cache, unless done already.

    load_onnx runs it in a child process; `make run` and deployments run it to pre-export.
    """
    import argparse

    from detector.model import BundleMeta, load_keras

    ap = argparse.ArgumentParser(prog="python -m detector.runtime")
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)
    paths = _cached(args.bundle)
    record = _verified(paths, args.tolerance)
    if record is not None:  # exported and verified already
        print(json.dumps(record))
        return 0
    meta = BundleMeta.from_dict(json.loads((args.bundle / "meta.json").read_text()))
    size = int(meta.input_size)
    try:
        _, record = export_verified(
            paths,
            size,
            args.batch_size,
            load_keras(args.bundle, size),
            args.tolerance,
        )
    except RuntimeUnavailable as exc:
        print(exc, file=sys.stderr)
        return EXIT_DISAGREES
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
