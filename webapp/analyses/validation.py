"""Upload checks by content, not by extension."""

from __future__ import annotations

import codecs
from typing import IO

VIDEO_HINT = "Verity accepts video clips: MP4, MOV, M4V, 3GP, WebM, MKV, AVI, MPEG-TS or FLV."


class RejectedUpload(ValueError):
    pass


def looks_like_text(head: bytes) -> bool:
    """True if the bytes read as UTF-8 text: no control characters but whitespace.

    Every container below has a NUL or another control byte in its first few bytes
    (box sizes, EBML and FLV headers, TS and PS packet headers), while a text file may
    by chance put "ftyp" at offset 4 or "G" at 0 and 188: text is never a video.
    """
    try:
        # Incremental: a multi-byte character cut at the end of the head is not an error.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return not any((ord(ch) < 32 and ch not in "\t\n\r\f\v") or ch == "\x7f" for ch in text)


def sniff_container(head: bytes) -> str | None:
    """Name the container from the file's first bytes, or None if it is not a video container."""
    if looks_like_text(head):
        return None
    if len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        brand = head[8:12]
        if head[4:8] == b"ftyp" and brand[:3] in (b"hei", b"avi", b"mif"):
            return None  # HEIF/AVIF still images share the ISO box format
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"FLV"):
        return "flv"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts"
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):
        return "mpeg"
    return None


def validate_upload(fh: IO[bytes], size: int, max_bytes: int) -> str:
    """Return the container name or raise RejectedUpload with a message for people."""
    if size == 0:
        raise RejectedUpload("The file is empty (0 bytes).")
    if size > max_bytes:
        raise RejectedUpload(
            f"The file is {size / 1e6:.0f} MB; the limit is {max_bytes / 1e6:.0f} MB."
        )
    pos = fh.tell()
    head = fh.read(512)
    fh.seek(pos)
    kind = sniff_container(head)
    if kind is None:
        raise RejectedUpload("This file is not a video. " + VIDEO_HINT)
    return kind
