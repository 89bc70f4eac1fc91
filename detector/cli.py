"""`python -m detector`: analyse clips, extract faces, train and evaluate without the site."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

from detector import verdict

log = logging.getLogger("detector")


class _Bar:
    """A tqdm bar on a terminal; plain log lines otherwise."""

    def __init__(self, desc: str, total: int = 100) -> None:
        self.tty = sys.stderr.isatty()
        self.desc = desc
        self.last_line = -1
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="%", leave=True)

    def update(self, stage: str, fraction: float) -> None:
        pct = int(fraction * 100)
        if self.bar is not None:
            self.bar.set_postfix_str(stage)
            self.bar.update(pct - self.bar.n)
        elif pct // 25 != self.last_line:
            self.last_line = pct // 25
            print(f"{self.desc}: {stage} {pct}%", file=sys.stderr, flush=True)

    def count(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.update(done - self.bar.n)
        elif done == total or done % max(1, total // 10) == 0:
            print(f"{self.desc}: {done}/{total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _analyze(args: argparse.Namespace) -> int:
    from detector.errors import DetectorError
    from detector.model import ModelBundle
    from detector.pipeline import Options, analyse_video

    if args.report and len(args.videos) > 1:
        print("--report takes one input; use --report-dir for several", file=sys.stderr)
        return 2
    if args.video and len(args.videos) > 1:
        print("--video takes one input; use --video-dir for several", file=sys.stderr)
        return 2
    t = time.perf_counter()
    try:
        bundle = ModelBundle.load(args.model, runtime=args.runtime)
    except DetectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bundle.warm_up()
    print(
        f"model {bundle.meta.name} {bundle.meta.version} ({bundle.runtime} runtime) loaded in "
        f"{time.perf_counter() - t:.1f}s",
        file=sys.stderr,
    )
    options = Options(frames=args.frames, detector=args.detector, min_face=args.min_face)
    failures = 0
    for d in (args.report_dir, args.video_dir):
        if d:
            Path(d).mkdir(parents=True, exist_ok=True)
    for video in args.videos:
        stem = Path(video).stem
        out_video = None
        if not args.no_video:
            if args.video:
                out_video = Path(args.video)
            elif args.video_dir:
                out_video = Path(args.video_dir) / f"{stem}.annotated.mp4"
        bar = _Bar(Path(video).name)
        try:
            report = analyse_video(video, bundle, options, bar.update, out_video)
        except DetectorError as exc:
            bar.close()
            failures += 1
            print(f"{video}: failed ({exc.code}): {exc}", file=sys.stderr)
            continue
        except Exception as exc:  # noqa: BLE001 - one bad clip must not stop the batch
            bar.close()
            failures += 1
            print(f"{video}: failed (internal error): {exc!r}", file=sys.stderr)
            continue
        bar.close()
        data = json.dumps(report.to_dict(), indent=2)
        if args.report:
            Path(args.report).write_text(data)
        elif args.report_dir:
            (Path(args.report_dir) / f"{stem}.json").write_text(data)
        else:
            print(data)
        v = report.verdict
        print(
            f"{video}: {v.label} (p_fake={v.fake_probability:.3f}, {len(report.tracks)} face track(s), "
            f"{report.timings['total']:.1f}s)" + (f" {v.note}" if v.note else ""),
            file=sys.stderr,
        )
    return 1 if failures else 0


def _items(args: argparse.Namespace):
    from detector import training

    items = []
    for spec in args.faces or []:
        items += training.folder_items(spec, group_by="video")
    for spec in args.ffpp or []:
        items += training.ffpp_items(spec, args.compression)
    for spec in args.csv or []:
        items += training.csv_items(spec)
    if not items:
        raise SystemExit("give at least one source: --faces DIR, --ffpp DIR or --csv FILE")
    return items


def _extract(args: argparse.Namespace) -> int:
    from detector import training

    items = _items(args)
    size = args.size
    if size is None:
        size = training.default_input_size()
        print(
            f"input size {size} px ({'a GPU is' if size == training.GPU_INPUT_SIZE else 'no GPU'}"
            " visible to Keras; --size to choose)",
            file=sys.stderr,
        )
    bar = _Bar("extract", len(items))
    faces = training.extract_faces(
        items, size, args.frames_per_video, progress=bar.count, detect_images=not args.aligned
    )
    bar.close()
    if args.sbi:
        from detector.sbi import self_blended_set

        bar = _Bar("self-blend", int((faces.y == 0).sum()))
        # Same groups as their originals: a later split by group keeps each pair together.
        faces = training.FaceSet.concat([faces, self_blended_set(faces, 0, bar.count)])
        bar.close()
    faces.save(args.out)
    print(
        f"{len(faces)} faces ({int(faces.y.sum())} fake) from {len(items)} files -> {args.out}",
        file=sys.stderr,
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    from detector import training

    data = training.FaceSet.concat([training.FaceSet.load(p) for p in args.data])
    split = np.array(
        [
            training.split_of(g, args.seed, args.val_fraction, args.test_fraction)
            for g in data.groups
        ]
    )
    tr, va, te = (data.subset(split == s) for s in ("train", "val", "test"))
    fresh = None
    if args.sbi or args.fresh_sbi:
        from detector.sbi import FreshBlends, self_blended_set

        # Only training faces are blended, after the split, so no blend of a validation
        # or test face can reach training.
        if args.fresh_sbi:
            fresh = FreshBlends(tr, args.seed)
        else:
            tr = training.FaceSet.concat([tr, self_blended_set(tr, args.seed)])
        if len(va) and not (va.y == 1).any():
            # A real-only set would leave nothing to choose the threshold on.
            va = training.FaceSet.concat([va, self_blended_set(va, args.seed + 1)])
    print(
        f"faces: train {len(tr)}, validation {len(va)}, test {len(te)} (split by video)",
        file=sys.stderr,
    )
    weights = dict(args.source_weight or [])
    try:  # train() checks too, but only after building a model and a work folder
        training.weighted_class_factors(weights, *training.planned_faces(tr, fresh is not None))
    except ValueError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    cfg = training.TrainConfig(
        input_size=data.x.shape[1],
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        patience=args.patience,
        seed=args.seed,
        steps_per_epoch=args.steps_per_epoch,
        init_weights=args.init_weights,
        fine_tune_from=args.fine_tune_from,
        augment=not args.no_augment,
        average_every=args.average_every,
        source_weights=weights,
        extra={"sbi": "fresh every epoch"} if args.fresh_sbi else {"sbi": True} if args.sbi else {},
    )
    bar = _Bar("train", args.epochs)

    def on_epoch(epoch: int, logs: dict) -> None:
        bar.count(epoch, args.epochs)
        print(" ".join(f"{k}={v:.4f}" for k, v in logs.items()), file=sys.stderr)

    bundle, history = training.train(
        tr, va, cfg, args.work_dir, on_epoch, name=args.name, version=args.version, fresh=fresh
    )
    bar.close()
    if len(te):
        scores = bundle.predict(te.x)
        bundle.meta.metrics["test"] = training.evaluate_scores(te, scores, bundle.meta.threshold)
        training.save_curves(history, (te.y, scores), Path(args.out) / "curves")
    else:
        training.save_curves(history, None, Path(args.out) / "curves")
    bundle.save(args.out)
    print(_table(bundle.meta.metrics), file=sys.stderr)
    print(f"bundle written to {args.out}", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from detector import training
    from detector.model import ModelBundle

    bundle = ModelBundle.load(args.model, runtime=args.runtime)
    if args.data:
        data = training.FaceSet.concat([training.FaceSet.load(p) for p in args.data])
    else:
        items = _items(args)
        bar = _Bar("extract", len(items))
        data = training.extract_faces(
            items,
            bundle.input_size,
            args.frames_per_video,
            progress=bar.count,
            detect_images=not args.aligned,
        )
        bar.close()
    scores = _scores(bundle, data.x)
    threshold = args.threshold if args.threshold is not None else bundle.meta.threshold
    result = training.evaluate_scores(data, scores, threshold)
    print(_table({"evaluation": result}))
    if args.against:
        other = ModelBundle.load(args.against, runtime=args.runtime)
        other_scores = _scores(other, data.x)
        result["against"] = {
            "model": str(args.against),
            "version": other.meta.version,
            "evaluation": training.evaluate_scores(data, other_scores, other.meta.threshold),
            "auc_difference": training.compare_scores(data, scores, other_scores),
        }
        print()
        print(_comparison_table(bundle.meta.version, other.meta.version, result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def _scores(bundle, x):
    """The bundle's scores for face crops x, each resized to its input size first (the same
    crops for every bundle, so a fair comparison), interpolated as the pipeline's crops are:
    area when shrinking, linear when enlarging. A chunk at a time: x may be on disk."""
    size = bundle.input_size
    if x.shape[1] == size:
        return bundle.predict(x)
    import cv2
    import numpy as np

    from detector.faceset import chunks

    interp = cv2.INTER_AREA if x.shape[1] > size else cv2.INTER_LINEAR
    return np.concatenate(
        [
            bundle.predict(
                np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in chunk])
            )
            for chunk in chunks(x)
        ]
    )


def _comparison_table(version: str, other: str, result: dict) -> str:
    """Paired ROC AUC difference per face, this bundle minus --against."""
    diff = result["against"]["auc_difference"]
    rows = [
        f"ROC AUC per face: {version} minus {other} (paired bootstrap over clips)",
        f"{'set':40} {'auc':>6} {'other':>6} {'diff':>7} {'diff 95% CI':>17}",
    ]

    def row(name: str, d: dict | None) -> None:
        if not d:
            rows.append(f"{name:40} {'-':>6} {'-':>6} {'-':>7} {'-':>17}")
            return
        ci = d["ci"]
        shown = f"{ci[0]:+.3f} to {ci[1]:+.3f}" if ci else "-"
        rows.append(
            f"{name:40} {d['auc_a']:>6.3f} {d['auc_b']:>6.3f} {d['difference']:>+7.3f} {shown:>17}"
        )

    row("all", diff["overall"])
    for src, d in diff["per_fake_source"].items():
        row(f"  {src} vs all reals", d)
    rows.append(_verdict(diff["overall"]))
    return "\n".join(rows)


def _verdict(d: dict | None) -> str:
    if not d:
        return "No comparison: the data needs real and fake faces."
    ci = d.get("ci")
    if not ci:
        return "Too few clips of each class for an interval: the difference is not evidence."
    if ci[0] > 0:
        return "The first model is better on clips like these (the interval is above 0)."
    if ci[1] < 0:
        return "The first model is worse on clips like these (the interval is below 0)."
    return "These clips cannot tell the two models apart (the interval includes 0)."


def _table(metrics: dict) -> str:
    rows = [
        f"{'set':32} {'n':>6} {'acc':>6} {'bal':>6} {'prec':>6} {'rec':>6} {'f1':>6} {'auc':>6}"
        f" {'auc 95% CI':>13}"
    ]

    def num(v: float | None) -> str:
        # "-" where a metric is undefined (no AUC with one class, no precision without a
        # face called fake, no recall without fakes).
        return f"{v:>6.3f}" if v is not None else f"{'-':>6}"

    def row(name: str, m: dict) -> None:
        ci = m.get("roc_auc_ci")
        interval = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"
        rates = " ".join(
            num(m.get(k))
            for k in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc")
        )
        rows.append(f"{name:32} {m['n']:>6} {rates} {interval:>13}")

    for set_name, m in metrics.items():
        if not isinstance(m, dict) or "frame" not in m:
            continue
        row(f"{set_name} (frames)", m["frame"])
        if "video" in m:
            row(f"{set_name} (videos)", m["video"])
        for src, sm in m.get("per_source", {}).items():
            row(f"  {src}", sm)
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m detector", description="Verity's deepfake face detector."
    )
    sub = p.add_subparsers(dest="command", required=True)

    def runtime(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--runtime",
            choices=["auto", "onnx", "keras"],
            default="auto",
            help="what runs the network: ONNX Runtime (faster on CPU; used only after it "
            "matched Keras within 1e-3 on this model), Keras, or auto: ONNX Runtime when "
            "available and verified, else Keras (default auto)",
        )

    a = sub.add_parser("analyze", aliases=["analyse"], help="analyse one or more clips")
    a.add_argument(
        "videos", nargs="+", metavar="VIDEO", help="clips to analyse (anything ffmpeg reads)"
    )
    g = a.add_mutually_exclusive_group()
    g.add_argument("--report", metavar="FILE", help="write the JSON report here (one input)")
    g.add_argument("--report-dir", metavar="DIR", help="write <input stem>.json per clip here")
    v = a.add_mutually_exclusive_group()
    v.add_argument("--video", metavar="FILE", help="write the annotated MP4 here (one input)")
    v.add_argument(
        "--video-dir", metavar="DIR", help="write <input stem>.annotated.mp4 per clip here"
    )
    v.add_argument("--no-video", action="store_true", help="do not render an annotated video")
    a.add_argument(
        "--frames", type=int, default=32, metavar="N", help="frames sampled per clip (default 32)"
    )
    a.add_argument(
        "--model", metavar="BUNDLE_DIR", help="model bundle directory (default: models/default)"
    )
    a.add_argument(
        "--detector",
        choices=["hog", "cnn"],
        default="hog",
        help="dlib HOG (fast) or MMOD CNN (accurate, slow)",
    )
    a.add_argument(
        "--min-face",
        type=_non_negative,
        default=verdict.DEFAULT_MIN_FACE,
        metavar="PX",
        help="faces narrower than this are shown but not judged, and a clip whose faces are "
        f"all narrower is uncertain (default {verdict.DEFAULT_MIN_FACE}; 0 judges every face)",
    )
    runtime(a)
    a.set_defaults(func=_analyze)

    def sources(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--faces",
            action="append",
            metavar="DIR",
            help="folder with real/ and fake/ subfolders (repeatable). The frames of one "
            "video, or the photos of one person, share a split: those in one subfolder "
            "(real/<video>/0001.jpg), or named alike up to a trailing _<n> or -<n> "
            "(<video>_<frame>.jpg, <Name>_0001.jpg); each clip is its own",
        )
        sp.add_argument(
            "--ffpp",
            action="append",
            metavar="DIR",
            help="FaceForensics++ root directory (repeatable)",
        )
        sp.add_argument(
            "--csv",
            action="append",
            metavar="FILE",
            help="CSV of path,label[,group] rows (repeatable): label real/fake or 0/1, paths "
            "relative to the CSV; rows of one group (a video, a person) share a split, and "
            "a row without a group is its own",
        )
        sp.add_argument(
            "--compression",
            default="c40",
            help="FaceForensics++ compression folder: raw, c23 or c40 (default c40)",
        )
        sp.add_argument(
            "--frames-per-video",
            type=int,
            default=50,
            metavar="N",
            help="faces cropped per clip (default 50)",
        )
        sp.add_argument(
            "--aligned",
            action="store_true",
            help="images are face crops already: do not run face detection on them",
        )

    e = sub.add_parser("extract-faces", help="crop faces from sources into a .npz dataset")
    sources(e)
    e.add_argument(
        "--size",
        type=int,
        default=None,
        help="crop size in pixels, the network input size (default: 299, Xception's own, "
        "when the Keras backend sees a GPU; 160 on a CPU, where 299 trains about 4x slower)",
    )
    e.add_argument(
        "--out", required=True, metavar="FILE.npz", help="where to write the face dataset"
    )
    e.add_argument(
        "--sbi",
        action="store_true",
        help="also write one self-blended pseudo-fake per real face (label fake, source sbi:...)",
    )
    e.set_defaults(func=_extract)

    t = sub.add_parser("train", help="train an Xception bundle from extracted faces")
    t.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="FILE.npz",
        help="face datasets from extract-faces (repeatable)",
    )
    t.add_argument(
        "--out", required=True, metavar="BUNDLE_DIR", help="where to write the model bundle"
    )
    t.add_argument(
        "--work-dir",
        default="var/training/run",
        help="checkpoints, TensorBoard logs; rerun to resume (default var/training/run)",
    )
    t.add_argument("--epochs", type=int, default=10, help="maximum epochs (default 10)")
    t.add_argument("--batch-size", type=int, default=16, help="fixed batch size (default 16)")
    t.add_argument(
        "--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 1e-3)"
    )
    t.add_argument(
        "--patience", type=int, default=3, help="early stopping patience in epochs (default 3)"
    )
    t.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="cap on batches per epoch (default: the whole set)",
    )
    t.add_argument(
        "--seed", type=int, default=1337, help="seed for splits, shuffling and initialisation"
    )
    t.add_argument(
        "--val-fraction",
        type=float,
        default=0.15,
        help="share of videos for validation (default 0.15)",
    )
    t.add_argument(
        "--test-fraction",
        type=float,
        default=0.15,
        help="share of videos held out for test (default 0.15)",
    )
    t.add_argument(
        "--init-weights",
        metavar="FILE",
        help="local ImageNet Xception (notop) weights; nothing is downloaded",
    )
    t.add_argument(
        "--fine-tune-from", metavar="BUNDLE_DIR", help="start from this bundle's weights"
    )
    t.add_argument("--no-augment", action="store_true", help="disable augmentation")
    t.add_argument(
        "--average-every",
        type=_positive_int,
        default=None,
        metavar="N",
        help="ship the average of the weights after every N-th training step of the run "
        "(stochastic weight averaging) instead of the best checkpoint; BatchNorm statistics "
        "are re-estimated on the average (default: off)",
    )
    t.add_argument(
        "--sbi",
        action="store_true",
        help="add self-blended fakes (Shiohara & Yamasaki 2022) made from the training real "
        "faces after the split; validation gets them too only if it has no fakes; test never",
    )
    t.add_argument(
        "--fresh-sbi",
        action="store_true",
        help="--sbi, with the training blends made anew every epoch, as SBI trains, instead "
        "of one fixed blend per real face (landmarks are found once)",
    )
    t.add_argument(
        "--source-weight",
        action="append",
        type=_source_weight,
        metavar="SOURCE=W",
        help="how much the training faces of one source count in the loss (repeatable; "
        "default 1 each; 0 leaves a source out). SOURCE is a source as extract-faces "
        "names it or a prefix of one: ffpp, ffpp:Deepfakes, faces:NAME, clips:NAME, "
        "csv:NAME, sbi (every self-blend) or sbi:faces:NAME; the longest match wins. The "
        "classes stay balanced by their total weight",
    )
    t.add_argument("--name", default="verity-xception", help="model name stored in the bundle")
    t.add_argument(
        "--version", default=None, help="version stored in the bundle (default: a timestamp)"
    )
    t.set_defaults(func=_train)

    ev = sub.add_parser(
        "evaluate", help="evaluate a bundle on any source and print the metrics table"
    )
    sources(ev)
    ev.add_argument(
        "--data",
        action="append",
        metavar="FILE.npz",
        help="face datasets from extract-faces instead of sources",
    )
    ev.add_argument(
        "--model", metavar="BUNDLE_DIR", help="model bundle directory (default: models/default)"
    )
    ev.add_argument(
        "--threshold", type=float, default=None, help="override the bundle's decision threshold"
    )
    ev.add_argument(
        "--against",
        metavar="BUNDLE_DIR",
        help="also score the same faces with this bundle and print the paired ROC AUC "
        "difference (--model minus this one) with a 95%% interval over clips",
    )
    ev.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    runtime(ev)
    ev.set_defaults(func=_evaluate)
    return p


def _non_negative(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {n}")
    return n


def _source_weight(text: str) -> tuple[str, float]:
    source, sep, value = text.rpartition("=")
    if not sep or not source:
        raise argparse.ArgumentTypeError(f"expected SOURCE=WEIGHT, e.g. ffpp=2, not {text!r}")
    try:
        weight = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the weight in {text!r} is not a number") from None
    if not (math.isfinite(weight) and weight >= 0):
        raise argparse.ArgumentTypeError(f"the weight in {text!r} must be 0 or more")
    return source, weight


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {n}")
    return n


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args))
