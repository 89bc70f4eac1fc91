"""Serve private files with HTTP Range support, so video players can seek.

Under ASGI (how the site runs) the body is an async generator: Django consumes a
synchronous iterator whole, in a thread, before it sends the first byte, which would hold a
500 MB upload in the web process's memory for every download. Under WSGI it stays a plain
generator.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.core.files.storage import default_storage
from django.core.handlers.asgi import ASGIRequest
from django.db.models.fields.files import FieldFile
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

CHUNK = 256 * 1024
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _iter(fh, start: int, length: int) -> Iterator[bytes]:
    try:
        fh.seek(start)
        remaining = length
        while remaining > 0:
            data = fh.read(min(CHUNK, remaining))
            if not data:
                break
            remaining -= len(data)
            yield data
    finally:
        fh.close()


async def _aiter(fh, start: int, length: int) -> AsyncIterator[bytes]:
    read = sync_to_async(fh.read, thread_sensitive=False)
    try:
        await sync_to_async(fh.seek, thread_sensitive=False)(start)
        remaining = length
        while remaining > 0:
            data = await read(min(CHUNK, remaining))
            if not data:
                break
            remaining -= len(data)
            yield data
    finally:
        await sync_to_async(fh.close, thread_sensitive=False)()


class _Body:
    """A byte range of an open file as a response body. Django calls `close()` when it is
    done with the response, which closes the file even if no byte was ever read (a client
    that went away first), where a generator left unstarted would keep it open."""

    def __init__(self, fh, start: int, length: int) -> None:
        self.fh, self.start, self.length = fh, start, length

    def close(self) -> None:
        self.fh.close()


class _SyncBody(_Body):
    def __iter__(self) -> Iterator[bytes]:
        return _iter(self.fh, self.start, self.length)


class _AsyncBody(_Body):
    def __aiter__(self) -> AsyncIterator[bytes]:
        return _aiter(self.fh, self.start, self.length)


def serve_file(
    request: HttpRequest,
    field: FieldFile | str,
    content_type: str,
    download_name: str | None = None,
) -> HttpResponse:
    """Stream a stored file (a FieldFile, or a name in the default storage); 404 when the
    row names a file that is no longer there."""
    if isinstance(field, str):
        storage, name = default_storage, field
    else:
        storage, name = field.storage, field.name
    try:
        size = storage.size(name)
    except FileNotFoundError:
        return HttpResponse(status=404)
    header = request.headers.get("Range", "").strip()
    start, end = 0, size - 1
    status = 200
    if header:
        m = RANGE_RE.match(header)
        if not m or (not m.group(1) and not m.group(2)):
            resp = HttpResponse(status=416)
            resp["Content-Range"] = f"bytes */{size}"
            return resp
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:  # suffix range: the last N bytes
            start = max(0, size - int(m.group(2)))
        if start >= size or start > end:
            resp = HttpResponse(status=416)
            resp["Content-Range"] = f"bytes */{size}"
            return resp
        status = 206
    length = end - start + 1
    try:
        fh = storage.open(name, "rb")
    except FileNotFoundError:
        return HttpResponse(status=404)
    body = (_AsyncBody if isinstance(request, ASGIRequest) else _SyncBody)(fh, start, length)
    resp = StreamingHttpResponse(body, status=status, content_type=content_type)
    resp["Content-Length"] = str(length)
    resp["Accept-Ranges"] = "bytes"
    resp["X-Content-Type-Options"] = "nosniff"
    resp["Cache-Control"] = "private, max-age=0"
    if status == 206:
        resp["Content-Range"] = f"bytes {start}-{end}/{size}"
    if download_name:
        from django.utils.http import content_disposition_header

        resp["Content-Disposition"] = content_disposition_header(True, download_name)
    return resp
