"""Typed errors. Each carries a message a user can act on."""

from __future__ import annotations


class DetectorError(Exception):
    """Base class; `code` is stable and machine-readable, `str(err)` is for people."""

    code = "detector_error"


class UnreadableVideo(DetectorError):
    code = "unreadable_video"


class NoVideoStream(UnreadableVideo):
    code = "no_video_stream"


class NotAVideo(UnreadableVideo):
    code = "not_a_video"


class VideoTooLarge(DetectorError):
    code = "video_too_large"


class BundleMismatch(DetectorError):
    code = "bundle_mismatch"


class Cancelled(DetectorError):
    code = "cancelled"


class RuntimeUnavailable(DetectorError):
    code = "runtime_unavailable"
