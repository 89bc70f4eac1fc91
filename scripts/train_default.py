"""Stage 2 of the shipped default model: fine-tune the MesoNet baseline on a mix chosen
for generalisation. Reads ../shared/data at run time; nothing from it is committed.

    PYTHONPATH=. .venv/bin/python scripts/train_default.py

Why this mix: a model trained on one deepfake set learns that set's fingerprints (its
compression, its resolution) and is at chance elsewhere; the baseline measured exactly
that. Self-blended images (SBI) made from real faces of every real source put each of
those sources on both sides of the label, so "which dataset is this" stops predicting
"fake", and the blending traces they teach are shared by face swaps in general.

Training: MesoNet (train split), FaceForensics++ c40 identity group {183, 253} (all
four methods), real faces from LFW (first 600 images) and from the real talking-head
clips, and SBI fakes from all of those reals.
Held out, never trained on: FaceForensics++ c40 group {469, 481} (scored per video),
the FaceForensics++ c23 pair, CIPLab Photoshop composites, StyleGAN3 faces against
unseen LFW and celebrity portraits.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from detector import training, verdict
from detector.faces import FaceDetector, square_crop
from detector.model import ModelBundle
from detector.sbi import FreshBlends, self_blended_set

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# The sample's two identity groups (union-find over the clips' pairs): {183, 253} and
# {469, 481}. Every shipped stage trained on the first.
FFPP_GROUPS = ("ffpp/183", "ffpp/469")


def cached(path: Path, make) -> training.FaceSet:
    if path.exists():
        return training.FaceSet.load(path)
    t = time.time()
    fs = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    fs.save(path)
    print(f"{path.name}: {len(fs)} faces in {time.time() - t:.0f}s", flush=True)
    return fs


def summary(name: str, result: dict) -> dict:
    out = {
        k: result["frame"][k]
        for k in (
            "n",
            "accuracy",
            "balanced_accuracy",
            "roc_auc",
            "roc_auc_ci",
            "precision",
            "recall",
        )
    }
    if "video" in result:
        out["video"] = {
            k: result["video"][k] for k in ("n", "accuracy", "balanced_accuracy", "roc_auc")
        }
    print(name, json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128, help="input size in px (default 128)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs (default 4)")
    ap.add_argument(
        "--steps", type=int, default=200, help="cap on batches of 16 per epoch (default 200)"
    )
    ap.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default 3e-4)")
    ap.add_argument(
        "--parent", default="models/default", help="bundle to fine-tune (default models/default)"
    )
    ap.add_argument(
        "--work",
        default="var/training/default",
        help="work folder: cached faces, checkpoints, TensorBoard logs; rerun to resume",
    )
    ap.add_argument(
        "--out", default="var/models/default-v2", help="where the bundle is written (or read)"
    )
    ap.add_argument("--version", default="2.0", help="version stored in the bundle")
    ap.add_argument(
        "--mesonet",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train on MesoNet at all (v2.0 did); --no-mesonet leaves out its real and its "
        "fake crops, as the first candidate did",
    )
    ap.add_argument(
        "--mesonet-fakes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train on MesoNet's fake crops (v2.0 did); --no-mesonet-fakes keeps only "
        "MesoNet's real crops, as reals and as SBI sources",
    )
    ap.add_argument(
        "--ffpp-fakes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train on the FaceForensics++ {183, 253} fakes (v2.0 did); with "
        "--no-mesonet-fakes too, every fake is a self-blended image (SBI's own recipe)",
    )
    ap.add_argument(
        "--sbi-mesonet-reals",
        type=int,
        default=1200,
        help="how many MesoNet real crops become SBI sources (0 or less: all of them)",
    )
    ap.add_argument("--seed", type=int, default=1337, help="training seed")
    ap.add_argument(
        "--train-ffpp",
        choices=FFPP_GROUPS,
        default="ffpp/183",
        help="the FaceForensics++ identity group trained on; the other one is held out "
        "(default ffpp/183, every shipped stage's; ffpp/469 trains the recipe's other fold)",
    )
    ap.add_argument(
        "--fresh-sbi",
        action="store_true",
        help="make the training split's self-blends anew every epoch (SBI's own scheme) "
        "instead of one fixed blend per real face; validation keeps the fixed ones",
    )
    ap.add_argument(
        "--average-every",
        type=int,
        default=None,
        metavar="N",
        help="ship the average of the weights after every N-th step (weight averaging)",
    )
    ap.add_argument(
        "--export-pool",
        metavar="FILE",
        help="build the recipe's training and validation faces at --size, write them to FILE "
        "(.npz, each face JPEG-encoded at quality 95, 4:4:4) and stop: to train on a machine "
        "that lacks ../shared/data, such as a rented GPU",
    )
    ap.add_argument(
        "--pool",
        metavar="FILE",
        help="train on the faces in FILE (from --export-pool) instead of building them; "
        "no held-out evaluation (run --evaluate-only where the data is)",
    )
    ap.add_argument(
        "--evaluate-only",
        action="store_true",
        help="re-score the bundle in --out on the held-out sources and rewrite only its "
        "meta.json (e.g. --out models/default)",
    )
    ap.add_argument(
        "--against",
        metavar="BUNDLE_DIR",
        help="with --evaluate-only: print the paired ROC AUC difference of --out minus this "
        "bundle on each held-out set (written to <work>/comparison.json; meta.json untouched)",
    )
    args = ap.parse_args()
    if not args.mesonet:
        args.mesonet_fakes = False
    if args.average_every is not None and args.average_every < 1:
        ap.error(f"--average-every must be 1 or more, not {args.average_every}")
    if args.mesonet_fakes and not args.ffpp_fakes:
        ap.error("--no-ffpp-fakes needs --no-mesonet-fakes (a recipe with MesoNet's fakes only)")
    s = args.size
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    if args.pool:  # a machine without ../shared/data (a GPU machine): train only
        train_set, val_set, fresh = load_pool(Path(args.pool), s)
        if args.fresh_sbi and fresh is None:
            ap.error(f"{args.pool} has no real faces for --fresh-sbi (export it with --fresh-sbi)")
        train_and_save(args, work, train_set, val_set, t0, fresh if args.fresh_sbi else None)
        return
    lfw_items = training.folder_items(DATA / "faces" / "lfw", "lfw")
    ffpp = ffpp_faces(work, s)
    if args.evaluate_only:
        # Only the held-out sets are needed; the bundle's weights are left untouched.
        bundle = ModelBundle.load(args.out)
        sets = held_out_sets(work, s, ffpp, lfw_items, args.train_ffpp)
        if args.against:
            other = ModelBundle.load(args.against)
            # Each bundle scores the same faces, cropped at its own input size.
            other_sets = sets
            if other.input_size != s:
                t = other.input_size
                other_sets = held_out_sets(work, t, ffpp_faces(work, t), lfw_items, args.train_ffpp)
            comparison = compare_held_out(bundle, other, sets, other_sets)
            comparison["false_alarms"] = {
                "this": false_alarms(bundle, real_face_sets(work, s)),
                "against": false_alarms(other, real_face_sets(work, other.input_size)),
            }
            (Path(args.work) / "comparison.json").write_text(json.dumps(comparison, indent=2))
        else:
            evaluate_held_out(bundle, sets)
            bundle.meta.metrics["held_out"]["false_alarms"] = false_alarms(
                bundle, real_face_sets(work, s)
            )
            (Path(args.out) / "meta.json").write_text(
                json.dumps(bundle.meta.to_dict(), indent=2) + "\n"
            )
        print(f"done in {time.time() - t0:.0f}s", flush=True)
        return

    train_set, val_set, fresh = training_pool(args, work, s, ffpp)
    if args.export_pool:
        save_pool(Path(args.export_pool), train_set, val_set, fresh)
        print(f"wrote {args.export_pool} in {time.time() - t0:.0f}s", flush=True)
        return
    bundle, history = train_and_save(args, work, train_set, val_set, t0, fresh)
    bundle = ModelBundle.load(args.out)  # measure what ships
    everything, all_scores = evaluate_held_out(
        bundle, held_out_sets(work, s, ffpp, lfw_items, args.train_ffpp)
    )
    bundle.meta.metrics["held_out"]["false_alarms"] = false_alarms(bundle, real_face_sets(work, s))
    bundle.save(args.out)
    training.save_curves(history, (everything.y, all_scores), work / "curves")
    print(f"done in {time.time() - t0:.0f}s", flush=True)


def invocation() -> str:
    """This run's command line as it was run: the Keras backend when one was chosen, and
    the interpreter (relative to the working directory when it lies inside it)."""
    env = [f"{k}={os.environ[k]}" for k in ("KERAS_BACKEND",) if k in os.environ]
    exe = Path(sys.executable)
    interpreter = str(exe.relative_to(Path.cwd())) if exe.is_relative_to(Path.cwd()) else exe.name
    return " ".join([*env, "PYTHONPATH=.", shlex.join([interpreter, *sys.argv])])


def train_and_save(
    args: argparse.Namespace,
    work: Path,
    train_set: training.FaceSet,
    val_set: training.FaceSet,
    t0: float,
    fresh: FreshBlends | None = None,
) -> tuple[ModelBundle, dict]:
    """Fine-tune the parent on the pool and save the bundle in args.out. Without
    ../shared/data (args.pool) the ROC curve drawn is the validation one; held-out
    evaluation is then a separate --evaluate-only run where the data is."""
    s = args.size
    print(
        f"train {len(train_set)} ({int(train_set.y.sum())} fake), val {len(val_set)} ({int(val_set.y.sum())} fake)",
        flush=True,
    )
    parent = ModelBundle.load(args.parent)
    cfg = training.TrainConfig(
        input_size=s,
        epochs=args.epochs,
        batch_size=16,
        learning_rate=args.lr,
        steps_per_epoch=args.steps,
        fine_tune_from=args.parent,
        patience=2,
        seed=args.seed,
        average_every=args.average_every,
        extra={
            # Stage 1 is the baseline (scripts/train_baseline.py); each fine-tune is one more.
            "stage": int(parent.meta.training.get("stage", 1)) + 1,
            "parent_version": parent.meta.version,
            "parent_input_size": parent.input_size,
            "sources": sorted(set(train_set.sources.tolist())),
            "command": invocation(),
            **({"fresh_sbi_seed": fresh.seed} if fresh is not None else {}),
        },
    )

    def on_epoch(epoch: int, logs: dict) -> None:
        print(f"epoch {epoch}: " + " ".join(f"{k}={v:.4f}" for k, v in logs.items()), flush=True)

    bundle, history = training.train(
        train_set, val_set, cfg, work / "run", on_epoch=on_epoch, version=args.version, fresh=fresh
    )
    bundle.meta.parent = parent.meta.version
    bundle.save(args.out)
    if args.pool:
        training.save_curves(history, (val_set.y, bundle.predict(val_set.x)), work / "curves")
        print(f"done in {time.time() - t0:.0f}s (held-out evaluation: --evaluate-only)", flush=True)
    return bundle, history


def training_pool(
    args: argparse.Namespace, work: Path, s: int, ffpp: training.FaceSet
) -> tuple[training.FaceSet, training.FaceSet, FreshBlends | None]:
    """The recipe's training and validation faces at size s, built from ../shared/data.
    With --fresh-sbi, the training split's self-blends are left out and made anew each
    epoch from its real faces (the third item); validation keeps the fixed ones."""
    lfw_items = training.folder_items(DATA / "faces" / "lfw", "lfw")
    ffpp_train = ffpp.groups == args.train_ffpp
    meso = cached(
        Path("var/training/baseline") / f"faces-{s}.npz",
        lambda: training.extract_faces(
            training.folder_items(DATA / "faces" / "mesonet", "mesonet"), s, detect_images=False
        ),
    )
    lfw_train = cached(
        work / f"lfw-train-{s}.npz", lambda: training.extract_faces(lfw_items[:600], s)
    )
    clips = cached(
        work / f"clips-real-{s}.npz",
        lambda: training.extract_faces(
            training.folder_items(DATA / "clips", "clips"), s, frames_per_video=12
        ),
    )

    # Splits: MesoNet by file hash as in stage 1; FF++ by identity group.
    meso_split = np.array([training.split_of(g, val=0.15, test=0.0) for g in meso.groups])
    reals = training.FaceSet.concat([lfw_train, clips, ffpp.subset(ffpp_train & (ffpp.y == 0))])
    rng = random.Random(7)
    if args.mesonet_fakes:  # v2.0's recipe: MesoNet's train split as it is
        meso_reals = meso.subset((meso_split == "train") & (meso.y == 0))
    elif args.mesonet:  # MesoNet's real crops only, split by group with everything else
        meso_reals = meso.subset(meso.y == 0)
    else:  # no MesoNet crop at all
        meso_reals = meso.subset(np.zeros(len(meso), dtype=bool))
    n_meso = args.sbi_mesonet_reals
    if 0 < n_meso < len(meso_reals):
        meso_reals_sbi = meso_reals.subset(
            np.array(sorted(rng.sample(range(len(meso_reals)), n_meso)))
        )
    else:
        meso_reals_sbi = meso_reals
    sbi_sources = training.FaceSet.concat([reals, meso_reals_sbi])
    # Keyed by the real faces it is made from: each recipe gets its own cache.
    sbi = cached(
        work / f"sbi-{s}-{sbi_sources.fingerprint()}.npz",
        lambda: self_blended_set(sbi_sources, seed=7),
    )

    if args.mesonet_fakes:
        pool = training.FaceSet.concat(
            [meso.subset(meso_split == "train"), ffpp.subset(ffpp_train), reals, sbi]
        )
        meso_val = meso.subset(meso_split == "val")
    elif args.ffpp_fakes:
        pool = training.FaceSet.concat([ffpp.subset(ffpp_train), reals, meso_reals, sbi])
        meso_val = None
    else:  # real faces and their self-blends only (the FF++ originals are in `reals`)
        pool = training.FaceSet.concat([reals, meso_reals, sbi])
        meso_val = None

    # Validation: MesoNet's held-out files plus 15% of the other groups (by group). The
    # FF++ group trained on always trains: the hash put {183, 253} there, and the other
    # fold ({469, 481}, which it would put in validation) must mirror that.
    def in_val(groups: np.ndarray) -> np.ndarray:
        return np.array(
            [
                not (args.mesonet_fakes and g.startswith("mesonet/"))
                and g != args.train_ffpp
                and training.split_of(g, seed=3, val=0.15, test=0.0) == "val"
                for g in groups
            ],
            dtype=bool,
        )

    val_mask = in_val(pool.groups)
    train_set = pool.subset(~val_mask)
    val_set = training.FaceSet.concat([pool.subset(val_mask)] + ([meso_val] if meso_val else []))
    fresh = None
    if args.fresh_sbi:
        is_sbi = np.char.startswith(train_set.sources.astype(str), "sbi:")
        train_set = train_set.subset(~is_sbi)
        fresh = FreshBlends(sbi_sources.subset(~in_val(sbi_sources.groups)), seed=args.seed)
    return train_set, val_set, fresh


POOL_JPEG_QUALITY = 95


def save_pool(
    path: Path,
    train_set: training.FaceSet,
    val_set: training.FaceSet,
    fresh: FreshBlends | None = None,
) -> None:
    """The face sets in one .npz, each face a JPEG (quality 95, no chroma subsampling):
    about a tenth of the raw bytes, so that a 299 px pool fits a transfer limit. Real and
    fake faces pass through the same encoder, so it carries no label information. With
    `fresh`, its real faces and their landmarks too (blending needs no dlib there)."""
    arrays: dict[str, np.ndarray] = {}
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        POOL_JPEG_QUALITY,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    ]
    sets = [("train", train_set), ("val", val_set)]
    if fresh is not None:
        sets.append(("fresh", fresh.real))
        arrays["fresh_found"] = np.array([p is not None for p in fresh.points])
        arrays["fresh_points"] = np.stack(
            [np.zeros((68, 2), np.int32) if p is None else p for p in fresh.points]
        ).astype(np.int32)
        arrays["fresh_seed"] = np.array(fresh.seed)
    for name, fs in sets:
        blobs = []
        for face in fs.x:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(face, cv2.COLOR_RGB2BGR), params)
            if not ok:
                raise ValueError("a face could not be JPEG-encoded")
            blobs.append(buf.ravel())
        arrays[f"{name}_jpeg"] = np.concatenate(blobs)
        arrays[f"{name}_offsets"] = np.cumsum([0] + [len(b) for b in blobs])
        for field in ("y", "sources", "groups", "video_ids"):
            arrays[f"{name}_{field}"] = getattr(fs, field)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def load_pool(path: Path, s: int) -> tuple[training.FaceSet, training.FaceSet, FreshBlends | None]:
    """The (train, val, fresh) that save_pool wrote (fresh None if it had none); refuses a
    pool of another size."""
    with np.load(path, allow_pickle=False) as z:
        sets = []
        names = ("train", "val", "fresh") if "fresh_found" in z.files else ("train", "val")
        for name in names:
            data, off = z[f"{name}_jpeg"], z[f"{name}_offsets"]
            x = np.stack(
                [
                    cv2.cvtColor(cv2.imdecode(data[a:b], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                    for a, b in zip(off[:-1], off[1:], strict=True)
                ]
            )
            if x.shape[1:] != (s, s, 3):
                raise ValueError(f"{path} holds {x.shape[1]} px faces, not {s} px (--size)")
            sets.append(
                training.FaceSet(
                    x,
                    z[f"{name}_y"],
                    z[f"{name}_sources"],
                    z[f"{name}_groups"],
                    z[f"{name}_video_ids"],
                )
            )
        fresh = None
        if len(sets) == 3:
            points = [
                p if ok else None for p, ok in zip(z["fresh_points"], z["fresh_found"], strict=True)
            ]
            fresh = FreshBlends(sets[2], seed=int(z["fresh_seed"]), points=points)
    return sets[0], sets[1], fresh


def ffpp_faces(work: Path, s: int) -> training.FaceSet:
    """The FaceForensics++ c40 sample, 32 faces per clip, at input size s."""
    return cached(
        work / f"ffpp-{s}.npz",
        lambda: training.extract_faces(
            training.ffpp_items(DATA / "ffpp-c40"), s, frames_per_video=32
        ),
    )


def held_out_sets(
    work: Path, s: int, ffpp: training.FaceSet, lfw_items, train_ffpp: str = FFPP_GROUPS[0]
) -> dict[str, training.FaceSet]:
    """The sources no model here trains on, each as one face set. `ffpp` is the whole
    FaceForensics++ sample at size s; its identities outside group `train_ffpp` are held out."""
    ffpp_test = ffpp.subset(ffpp.groups != train_ffpp)
    pair = cached(
        work / f"ffpp-c23-pair-{s}.npz",
        lambda: training.extract_faces(
            [
                training.Item(
                    str(DATA / "clips/pairs/ffpp-c23/real.mp4"),
                    0,
                    "ffpp-c23:original",
                    "c23/real",
                    "video",
                ),
                training.Item(
                    str(DATA / "clips/pairs/ffpp-c23/fake.mp4"),
                    1,
                    "ffpp-c23:manipulated",
                    "c23/fake",
                    "video",
                ),
            ],
            s,
            frames_per_video=32,
        ),
    )
    cip = cached(
        work / f"ciplab-{s}.npz",
        lambda: training.extract_faces(
            training.folder_items(DATA / "faces" / "ciplab", "ciplab"), s
        ),
    )
    gan = cached(
        work / f"gan-{s}.npz",
        lambda: training.FaceSet.concat(
            [
                training.extract_faces(
                    training.folder_items(DATA / "faces" / "stylegan3", "stylegan3"), s
                ),
                training.extract_faces(lfw_items[600:], s),
                training.extract_faces(
                    [
                        training.Item(str(p), 0, "faces:celebrities", f"celeb/{p.stem}")
                        for p in sorted((DATA / "images" / "celebrities").glob("*.jpg"))
                    ],
                    s,
                ),
            ]
        ),
    )
    return {
        "ffpp_c40_unseen_identities": ffpp_test,
        "ffpp_c23_pair": pair,
        "ciplab": cip,
        "stylegan3_vs_unseen_reals": gan,
    }


def real_face_sets(work: Path, s: int) -> dict[str, training.FaceSet]:
    """Real faces that no stage trains on or is chosen on, to count false alarms: every face
    HOG finds in images/'s group photos and portraits (the celebrities are held out above;
    not dogs.jpg), cropped as the pipeline crops, and the ORL faces (grey, tight crops)."""
    photos = [
        p for p in sorted((DATA / "images").glob("*")) if p.is_file() and p.name != "dogs.jpg"
    ]
    return {
        "photos_every_face": cached(work / f"photos-{s}.npz", lambda: every_face(photos, s)),
        "orl": cached(
            work / f"orl-{s}.npz",
            lambda: training.extract_faces(training.folder_items(DATA / "faces" / "orl", "orl"), s),
        ),
    }


def every_face(paths: list[Path], s: int) -> training.FaceSet:
    """Every face HOG finds in each image (not only the largest), as real faces."""
    detector = FaceDetector("hog")
    xs, sources, groups = [], [], []
    for p in paths:
        rgb = training.read_image(str(p))
        for box in detector.detect(rgb):
            xs.append(square_crop(rgb, box, s))
            size = "under 80 px" if box.width < 80 else "80 px and over"
            sources.append(f"images:photos, face {size}")
            groups.append(f"photos/{p.name}")
    n = len(xs)
    return training.FaceSet(np.stack(xs), np.zeros(n, int), np.array(sources), np.array(groups))


def false_alarms(bundle: ModelBundle, sets: dict[str, training.FaceSet]) -> dict:
    """Per set of real faces: how many the pipeline's verdict rules (verdict.label_for)
    would call Fake, Uncertain, or Real, and how many score above the threshold at all;
    and the same per source (for the photos: faces under 80 px wide, and the rest)."""
    t, m = bundle.meta.threshold, bundle.meta.uncertain_margin

    def rates(scores: np.ndarray) -> dict:
        labels = np.array([verdict.label_for(float(p), t, m) for p in scores])
        return {
            "n": int(len(scores)),
            "fake": float(np.mean(labels == verdict.FAKE)),
            "uncertain": float(np.mean(labels == verdict.UNCERTAIN)),
            "real": float(np.mean(labels == verdict.REAL)),
            "above_threshold": float(np.mean(scores > t)),
            "median_score": float(np.median(scores)),
        }

    out = {}
    for key, data in sets.items():
        scores = bundle.predict(data.x)
        out[key] = rates(scores)
        out[key]["per_source"] = {
            src: rates(scores[data.sources == src]) for src in sorted(set(data.sources.tolist()))
        }
        print(key, json.dumps(out[key]), flush=True)
    return out


def scored(
    bundle: ModelBundle, sets: dict[str, training.FaceSet]
) -> dict[str, tuple[training.FaceSet, np.ndarray]]:
    """Each held-out set with the bundle's scores, and "all_unseen": all of them together
    (each face is scored once)."""
    out = {key: (data, bundle.predict(data.x)) for key, data in sets.items()}
    out["all_unseen"] = (
        training.FaceSet.concat([data for data, _ in out.values()]),
        np.concatenate([scores for _, scores in out.values()]),
    )
    return out


def evaluate_held_out(
    bundle: ModelBundle, sets: dict[str, training.FaceSet]
) -> tuple[training.FaceSet, np.ndarray]:
    """Score the bundle on sources it never trained on; store full metrics in its meta.
    Returns all the held-out faces and their scores."""
    held: dict = {}
    thr = bundle.meta.threshold
    results = scored(bundle, sets)
    for key, (data, scores) in results.items():
        held[key] = training.evaluate_scores(data, scores, thr)
        summary(key, held[key])
        if key == "ffpp_c40_unseen_identities":
            # Each method against the originals of the same identities.
            originals = data.sources == "ffpp:original"
            held["ffpp_c40_per_method"] = {}
            for method in sorted(set(data.sources.tolist()) - {"ffpp:original"}):
                m = originals | (data.sources == method)
                held["ffpp_c40_per_method"][method.split(":")[1]] = training.evaluate_scores(
                    data.subset(m), scores[m], thr
                )
    bundle.meta.metrics["held_out"] = held
    return results["all_unseen"]


def compare_held_out(
    bundle: ModelBundle,
    other: ModelBundle,
    sets: dict[str, training.FaceSet],
    other_sets: dict[str, training.FaceSet],
) -> dict:
    """Paired ROC AUC difference, bundle minus other, on each held-out set. `sets` and
    `other_sets` hold the same faces, each cropped at its bundle's input size."""
    for key, data in sets.items():
        theirs_data = other_sets[key]
        if not (
            np.array_equal(data.video_ids, theirs_data.video_ids)
            and np.array_equal(data.y, theirs_data.y)
        ):
            raise ValueError(f"{key}: the two sizes found different faces; no paired comparison")
    theirs = scored(other, other_sets)
    out = {}
    for key, (data, scores) in scored(bundle, sets).items():
        out[key] = training.compare_scores(data, scores, theirs[key][1])
        d = out[key]["overall"]
        if not d:
            print(f"{key}: no comparison", flush=True)
            continue
        ci = f"95% CI {d['ci'][0]:+.3f} to {d['ci'][1]:+.3f}" if d["ci"] else "no interval"
        print(
            f"{key}: {d['auc_a']:.3f} vs {d['auc_b']:.3f}, difference {d['difference']:+.3f} ({ci})",
            flush=True,
        )
    return out


if __name__ == "__main__":
    main()
