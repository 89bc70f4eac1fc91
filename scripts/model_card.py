"""Print the measured tables of a bundle's model card as Markdown, from its meta.json.

.venv/bin/python scripts/model_card.py [models/default]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def auc(m: dict) -> str:
    ci = m.get("roc_auc_ci")
    return fmt(m.get("roc_auc")) + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "")


def row(name: str, m: dict) -> str:
    return (
        f"| {name} | {m['n']} | {auc(m)} | {fmt(m['accuracy'])} | {fmt(m['balanced_accuracy'])} "
        f"| {fmt(m['precision'])} | {fmt(m['recall'])} |"
    )


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "models/default")
    meta = json.loads((path / "meta.json").read_text())
    print(
        f"Bundle `{meta['name']}` version `{meta['version']}` (parent `{meta.get('parent')}`), input {meta['input_size']} px, "
        f"threshold {meta['threshold']:.3f}, uncertain margin ±{meta['uncertain_margin']}, data fingerprint `{meta['data_fingerprint']}`.\n"
    )
    print("| data | n | ROC AUC (95% CI) | accuracy | balanced acc. | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    held = meta["metrics"].get("held_out", {})
    names = {
        "ffpp_c40_unseen_identities": "FaceForensics++ c40, unseen identities (469, 481)",
        "ffpp_c23_pair": "FaceForensics++ c23 pair (another identity)",
        "ciplab": "CIPLab Photoshop composites",
        "stylegan3_vs_unseen_reals": "StyleGAN3 faces vs unseen LFW + celebrity photos",
        "all_unseen": "**all unseen sources**",
    }
    for key, label in names.items():
        if key not in held:
            continue
        r = held[key]
        print(row(f"{label}, per face", r["frame"]))
        if "video" in r and r["video"]["n"] > 1:
            print(row(f"{label}, per video", r["video"]))
    per_method = held.get("ffpp_c40_per_method", {})
    if per_method:
        print(
            "\nEach FaceForensics++ method against the originals of the same unseen identities:\n"
        )
        print("| method | n | ROC AUC (95% CI) | accuracy | balanced acc. | precision | recall |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for method, r in per_method.items():
            print(row(f"{method}, per face", r["frame"]))
    alarms = held.get("false_alarms", {})
    if alarms:
        print(
            "\nFalse alarms: real faces no stage trained on, as the verdict rules would call them "
            f"(Fake above {meta['threshold'] + meta['uncertain_margin']:.2f}, Real below "
            f"{meta['threshold'] - meta['uncertain_margin']:.2f}):\n"
        )
        print(
            "| real faces | n | called Fake | Uncertain | called Real | above threshold | median score |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for key, r in alarms.items():
            for name, m in [(key, r), *((f"  {k}", v) for k, v in r.get("per_source", {}).items())]:
                if name.startswith("  ") and len(r.get("per_source", {})) < 2:
                    continue
                print(
                    f"| {name} | {m['n']} | {m['fake']:.0%} | {m['uncertain']:.0%} | {m['real']:.0%} "
                    f"| {m['above_threshold']:.0%} | {m['median_score']:.2f} |"
                )
    val = meta["metrics"].get("validation", {})
    if val:
        print(
            "\nValidation (same sources as training, never trained on; used to pick the threshold and calibration):\n"
        )
        print("| data | n | ROC AUC (95% CI) | accuracy | balanced acc. | precision | recall |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        print(row("validation, per face", val["frame"]))
        for src, m in val.get("per_source", {}).items():
            print(row(f"  {src}", m))
    print("\nTraining:", json.dumps(meta.get("training", {})))


if __name__ == "__main__":
    main()
