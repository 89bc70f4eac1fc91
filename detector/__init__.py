"""Verity's analysis engine: a pure-Python library (never imports Django).

Entry points:
    analyse_video(path, bundle, options, on_progress) -> Report
    ModelBundle.load(directory)
    python -m detector --help
"""

from __future__ import annotations

from detector.errors import (
    BundleMismatch,
    DetectorError,
    UnreadableVideo,
)

__all__ = ["BundleMismatch", "DetectorError", "UnreadableVideo"]
