from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.media import SHARED, astronaut_clip  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def astro_clip(tmp_path_factory) -> Path:
    """30 frames, 640x480, 25 fps, H.264: the astronaut drifting to the right."""
    return astronaut_clip(tmp_path_factory.mktemp("clips") / "astronaut.mp4", 30)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """An untrained Xception at the smallest input it accepts: tests of plumbing,
    not of quality."""
    from detector.model import BundleMeta, ModelBundle, build_xception

    path = tmp_path_factory.mktemp("bundle") / "tiny"
    bundle = ModelBundle(
        BundleMeta(name="tiny", version="tiny-1", input_size=71), build_xception(71)
    )
    bundle.save(path)
    # Export and verify it for ONNX Runtime once, here: worker processes started by the
    # tests (runtime "auto") then load the cached export in a second instead of each
    # paying for an export of their own.
    ModelBundle.load(path, runtime="onnx")
    return ModelBundle.load(path)


@pytest.fixture(scope="session")
def shipped_onnx():
    """The shipped bundle on ONNX Runtime, exported and verified once per checkout (the
    export is cached in VERITY_CACHE_DIR), so that the workers the tests start load it in
    a second."""
    from detector.model import DEFAULT_BUNDLE, ModelBundle

    return ModelBundle.load(DEFAULT_BUNDLE, runtime="onnx")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared/data is absent")
    return SHARED


@pytest.fixture
def tiny_model_dir(tiny_bundle, settings):
    settings.VERITY_MODEL_DIR = str(tiny_bundle.path)
    return tiny_bundle.path
