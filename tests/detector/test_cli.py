"""`python -m detector analyze`: the command-line contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.media import astronaut_clip, blank_clip, read_all


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    good = astronaut_clip(d / "astro.mp4", 20)
    blank = blank_clip(d / "blank.mp4", 8)
    bad = d / "broken.mp4"
    bad.write_text("not a video")
    return good, blank, bad


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "detector", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_it_analyses_several_clips_skips_a_bad_one_and_fails_the_exit_status(
    clips, tiny_bundle, tmp_path
):
    good, blank, bad = clips
    reports, videos = tmp_path / "reports", tmp_path / "videos"
    proc = _run(
        "analyze",
        str(good),
        str(bad),
        str(blank),
        "--report-dir",
        str(reports),
        "--video-dir",
        str(videos),
        "--model",
        str(tiny_bundle.path),
        "--frames",
        "8",
    )
    # The bad input is reported and skipped; the others still run; the exit status says one failed.
    assert proc.returncode == 1
    assert "broken.mp4: failed (unreadable_video)" in proc.stderr
    # One report per clip, named after the input, with the documented schema.
    assert sorted(p.name for p in reports.iterdir()) == ["astro.json", "blank.json"]
    astro = json.loads((reports / "astro.json").read_text())
    assert astro["schema_version"] == "1" and astro["verdict"]["label"] in (
        "real",
        "fake",
        "uncertain",
    )
    assert json.loads((reports / "blank.json").read_text())["verdict"]["label"] == "no_face"
    assert astro["model"]["version"] == "tiny-1" and "total" in astro["timings"]
    # The default runtime is ONNX Runtime once the export was verified (conftest did that).
    assert astro["model"]["runtime"] == "onnx"
    # Annotated videos for the clips that worked.
    assert read_all(videos / "astro.annotated.mp4")[0] == 20
    # Plain log lines when stderr is not a terminal.
    assert "astro.mp4: reading" in proc.stderr


def test_it_writes_one_report_and_no_video_when_asked(clips, tiny_bundle, tmp_path):
    good, _, _ = clips
    report = tmp_path / "r.json"
    proc = _run(
        "analyze",
        str(good),
        "--report",
        str(report),
        "--no-video",
        "--model",
        str(tiny_bundle.path),
        "--frames",
        "4",
        "--runtime",
        "keras",
        "--min-face",
        "1000",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    assert len(data["frames"]) == 4 and "render" not in data["timings"]
    assert data["model"]["runtime"] == "keras"
    # --min-face above the astronaut's width: shown, not judged.
    assert data["options"]["min_face"] == 1000
    assert data["verdict"]["label"] == "uncertain" and "under 1000 px" in data["verdict"]["note"]


def test_it_refuses_a_negative_minimum_face_size(clips):
    proc = _run("analyze", str(clips[0]), "--min-face", "-1")
    assert proc.returncode == 2 and "must be 0 or more, not -1" in proc.stderr


def test_it_refuses_a_bundle_that_does_not_match(clips, tmp_path):
    good, _, _ = clips
    (tmp_path / "meta.json").write_text(
        json.dumps({"name": "x", "version": "1", "input_size": 128, "architecture": "resnet"})
    )
    proc = _run("analyze", str(good), "--model", str(tmp_path))
    assert proc.returncode == 2 and "architecture 'resnet' is not supported" in proc.stderr
