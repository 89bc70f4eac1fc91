"""The Retrain form: one validation for the staff page and the REST API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings

from webapp.training.models import ModelVersion
from webapp.training.registry import read_meta

LAYOUTS = [
    ("auto", "Detect from the folder"),
    ("folder", "real/ and fake/ subfolders (images or clips)"),
    ("ffpp", "FaceForensics++ (original_sequences/, manipulated_sequences/)"),
]
COMPRESSIONS = [("c23", "c23"), ("c40", "c40"), ("raw", "raw")]


class RetrainForm(forms.Form):
    dataset = forms.CharField(
        required=False,
        max_length=500,
        label="Dataset folder on the server",
        help_text="An absolute path the training worker can read. Leave empty to train on labelled clips only.",
    )
    layout = forms.ChoiceField(choices=LAYOUTS, initial="auto", required=False)
    compression = forms.ChoiceField(
        choices=COMPRESSIONS,
        initial="c23",
        required=False,
        label="FaceForensics++ compression",
    )
    labelled = forms.BooleanField(required=False, label="Include the clips users labelled")
    labelled_weight = forms.FloatField(
        min_value=0.1,
        max_value=100,
        initial=1.0,
        required=False,
        label="Weight of the labelled clips",
        help_text="How much each labelled clip's faces count in training against the dataset's "
        "(1: the same; 5: five times as much). Classes stay balanced.",
    )
    epochs = forms.IntegerField(min_value=1, max_value=200, initial=5)
    input_size = forms.IntegerField(
        min_value=71,
        max_value=512,
        initial=160,
        label="Input size (px)",
        help_text="71 to 512; a fine-tuned version may change its parent's size.",
    )
    fine_tune_from = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(
            status__in=[
                ModelVersion.Status.READY,
                ModelVersion.Status.ACTIVE,
                ModelVersion.Status.RETIRED,
            ]
        ),
        required=False,
        empty_label="Train from scratch",
        label="Fine-tune from",
        to_field_name="id",
    )
    batch_size = forms.IntegerField(min_value=1, max_value=256, initial=16)
    frames_per_video = forms.IntegerField(
        min_value=1, max_value=300, initial=16, label="Frames per clip"
    )
    steps_per_epoch = forms.IntegerField(
        min_value=1, required=False, label="Steps per epoch (empty: all batches)"
    )
    sbi = forms.BooleanField(required=False, label="Add self-blended fakes of the real faces")
    fresh_sbi = forms.BooleanField(
        required=False,
        label="Make the self-blended fakes anew every epoch",
        help_text="As SBI itself trains, so the network cannot memorise a fixed set of "
        "blends. Implies self-blended fakes.",
    )
    average_every = forms.IntegerField(
        min_value=1,
        required=False,
        label="Average the weights every N steps",
        help_text="Ships the mean of the run's weights (stochastic weight averaging) instead "
        "of its best checkpoint. Empty: off.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["fine_tune_from"].label_from_instance = lambda v: (
            f"{v.version} ({v.status}, {v.meta.get('input_size', '?')} px)"
        )

    def clean_dataset(self) -> str:
        value = (self.cleaned_data.get("dataset") or "").strip()
        if not value:
            return ""
        path = Path(value)
        if not path.is_absolute():
            raise forms.ValidationError("Give an absolute path, e.g. /data/datasets/ffpp.")
        roots = getattr(settings, "VERITY_DATASET_ROOTS", None)
        if roots and not any(path.resolve().is_relative_to(Path(r).resolve()) for r in roots):
            raise forms.ValidationError(
                "Datasets must be under " + ", ".join(str(r) for r in roots) + "."
            )
        if not path.is_dir():
            raise forms.ValidationError(f"{value} is not a folder on the server.")
        return str(path)

    def clean(self) -> dict[str, Any]:
        from webapp.training.services import labelled_analyses

        data = super().clean()
        if not data.get("dataset") and not data.get("labelled"):
            raise forms.ValidationError(
                "Choose at least one data source: a dataset folder, the labelled clips, or both."
            )
        if data.get("labelled") and not labelled_analyses().exists():
            self.add_error("labelled", "No clip has been labelled by its owner yet.")
        parent = data.get("fine_tune_from")
        if parent is not None:
            meta = read_meta(parent.bundle_path)
            if not meta:
                self.add_error("fine_tune_from", f"Version {parent.version} has no bundle.")
        return data

    def sources(self) -> dict[str, Any]:
        d = self.cleaned_data
        return {
            "dataset": d["dataset"],
            "layout": d.get("layout") or "auto",
            "compression": d.get("compression") or "c23",
            "labelled": bool(d.get("labelled")),
            "labelled_weight": d.get("labelled_weight") or 1.0,
        }

    def params(self) -> dict[str, Any]:
        d = self.cleaned_data
        return {
            "epochs": d["epochs"],
            "input_size": d["input_size"],
            "batch_size": d["batch_size"],
            "frames_per_video": d["frames_per_video"],
            "steps_per_epoch": d.get("steps_per_epoch"),
            "sbi": bool(d.get("sbi") or d.get("fresh_sbi")),
            "fresh_sbi": bool(d.get("fresh_sbi")),
            "average_every": d.get("average_every"),
        }
