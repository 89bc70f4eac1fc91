"""How face size drives the shipped model's clip verdicts: the evidence for a minimum face
size below which a track is not called Fake or Real. Reads ../shared/data at run time.

    PYTHONPATH=. .venv/bin/python scripts/face_size_study.py [--bundle models/default]

1. Analyse every clip in ../shared/data (the real clips, the FaceForensics++ c40 sample, the
   c23 pair) with the pipeline's defaults, once, caching each report in --work.
2. For each candidate minimum width, re-derive every clip's verdict with
   `verdict.clip_verdict(..., min_face=w)` from the same reports, and count, per group of
   clips, how many end Fake, Uncertain and Real. Nothing is re-run per width.
3. The sample clips hold few small faces, so also simulate them: every held-out face of
   scripts/train_default.py (sources the model never trained on) and every real face of its
   false-alarm sets, shrunk to what its crop would hold were the face w px wide in the
   frame (area-downscaled, then upscaled back as the pipeline's crop does). Per width: ROC
   AUC over the held-out faces (95% interval over clips) and how often real faces are
   called Fake by the verdict rules.

Which clips a model trained on is printed beside them: v2.1 took real faces (the largest per
frame, 12 frames a clip) from every clip in clips/real/ and trained on FaceForensics++
identities 183 and 253, so those rows are not unseen data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from detector import metrics, training, verdict
from detector.faces import CROP_SCALE
from detector.model import ModelBundle
from detector.pipeline import Options, analyse_video
from scripts import train_default

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WIDTHS = (0, 48, 64, 80, 96, 112)
SIMULATED = (32, 48, 64, 80, 96, 128, None)  # None: the faces as cropped


def clips() -> list[tuple[str, str, Path]]:
    """(group, label, path) for every clip, real or fake."""
    out = [
        ("real clips (reals trained on)", "real", p) for p in sorted(DATA.glob("clips/real/*.mp4"))
    ]
    ffpp = DATA / "ffpp-c40"
    for p in sorted(ffpp.glob("original_sequences/youtube/c40/videos/*.mp4")):
        seen = p.stem in {"183", "253"}
        out.append((f"FF++ c40 real ({'trained on' if seen else 'unseen'})", "real", p))
    for p in sorted(ffpp.glob("manipulated_sequences/*/c40/videos/*.mp4")):
        seen = p.stem.split("_")[0] in {"183", "253"}
        out.append((f"FF++ c40 fake ({'trained on' if seen else 'unseen'})", "fake", p))
    pair = DATA / "clips" / "pairs" / "ffpp-c23"
    out.append(("FF++ c23 pair (unseen)", "real", pair / "real.mp4"))
    out.append(("FF++ c23 pair (unseen)", "fake", pair / "fake.mp4"))
    return out


def reports(bundle: ModelBundle, work: Path) -> list[tuple[str, str, Path, dict]]:
    """Each clip's report with every face judged (min_face 0), cached per clip."""
    work.mkdir(parents=True, exist_ok=True)
    out = []
    for group, label, path in clips():
        cache = work / (str(path.relative_to(DATA).with_suffix("")).replace("/", "_") + ".json")
        if not cache.exists():
            report = analyse_video(path, bundle, Options(min_face=0)).to_dict()
            cache.write_text(json.dumps(report))
        out.append((group, label, path, json.loads(cache.read_text())))
    return out


def widths_of(report: dict) -> list[int]:
    return [t["box"][2] - t["box"][0] for t in report["tracks"]]


def shrunk(x: np.ndarray, width: int | None) -> np.ndarray:
    """Crops (n, s, s, 3) as they would be were each face `width` px wide in the frame."""
    if width is None:
        return x
    s = x.shape[1]
    side = max(2, round(width * CROP_SCALE))
    if side >= s:
        return x
    return np.stack(
        [
            cv2.resize(
                cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA),
                (s, s),
                interpolation=cv2.INTER_LINEAR,
            )
            for c in x
        ]
    )


def simulated(bundle: ModelBundle, work: Path) -> None:
    """Section 3: held-out AUC and real faces called Fake, per simulated face width."""
    s = bundle.input_size
    t, m = bundle.meta.threshold, bundle.meta.uncertain_margin
    lfw_items = training.folder_items(DATA / "faces" / "lfw", "lfw")
    held = train_default.held_out_sets(work, s, train_default.ffpp_faces(work, s), lfw_items)
    # As in the model card: face manipulations are the FF++ clips, the c23 pair and CIPLab.
    gan = held.pop("stylegan3_vs_unseen_reals")
    manip = training.FaceSet.concat(list(held.values()))
    everything = training.FaceSet.concat([manip, gan])  # manip's faces first
    reals = train_default.real_face_sets(work, s)
    print(
        f"\n| face width (simulated) | AUC, all held-out ({len(everything)} faces) "
        f"| AUC, face manipulations only ({len(manip)}) "
        + "".join(f"| {k} ({len(v)}): called Fake " for k, v in reals.items())
        + "|"
    )
    print("|---|---|---|" + "---:|" * len(reals))
    for w in SIMULATED:
        p = bundle.predict(shrunk(everything.x, w))
        pm = p[: len(manip)]

        def auc(data: training.FaceSet, scores: np.ndarray) -> str:
            a = metrics.roc_auc(data.y, scores)
            ci = metrics.auc_interval(data.y, scores, data.video_ids)
            return f"{a:.3f}" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "")

        fakes = []
        for data in reals.values():
            labels = [verdict.label_for(float(q), t, m) for q in bundle.predict(shrunk(data.x, w))]
            fakes.append(f"{np.mean(np.array(labels) == verdict.FAKE):.0%}")
        name = "as cropped" if w is None else f"{w} px"
        print(f"| {name} | {auc(everything, p)} | {auc(manip, pm)} | " + " | ".join(fakes) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bundle", default="models/default")
    ap.add_argument("--work", default="var/face-size-study")
    ap.add_argument(
        "--faces-work",
        default="var/training/default",
        help="where scripts/train_default.py caches its held-out faces (made if absent)",
    )
    args = ap.parse_args()
    bundle = ModelBundle.load(args.bundle, runtime="auto")
    t, m = bundle.meta.threshold, bundle.meta.uncertain_margin
    rows = reports(bundle, Path(args.work) / bundle.meta.version)

    print(f"\nmodel {bundle.meta.name} {bundle.meta.version}; threshold {t:.3f} ± {m:.3f}")
    print("\nPer clip (at min_face 0): verdict, tracks, width of each track's largest box in px")
    for _group, label, path, r in rows:
        tracks = ", ".join(
            f"{tr['label'][0].upper()}{tr['fake_probability']:.2f}@{w}"
            for tr, w in zip(r["tracks"], widths_of(r), strict=True)
        )
        name = str(path.relative_to(DATA)).replace("/c40/videos", "")
        print(f"  {label:4} {name:62} {r['verdict']['label']:9} {tracks[:100]}")

    groups = sorted({g for g, *_ in rows})
    print("\n| clips | n | " + " | ".join(f"min {w} px: F/U/R/N" for w in WIDTHS) + " |")
    print("|---|---:|" + "---|" * len(WIDTHS))
    for g in groups:
        members = [r for gg, _, _, r in rows if gg == g]
        cells = []
        for w in WIDTHS:
            labels = [
                verdict.clip_verdict(
                    [tr["fake_probability"] for tr in r["tracks"]], t, m, widths_of(r), w
                )[0]
                for r in members
            ]
            cells.append(
                "/".join(
                    str(labels.count(x))
                    for x in (verdict.FAKE, verdict.UNCERTAIN, verdict.REAL, verdict.NO_FACE)
                )
            )
        print(f"| {g} | {len(members)} | " + " | ".join(cells) + " |")

    simulated(bundle, Path(args.faces_work))


if __name__ == "__main__":
    main()
