"""The web server: uvicorn with one process per core, HTTP and WebSocket.

    python -m webapp.server

The same command serves `make run`, the end-to-end tests and the image, configured from
the environment:
  VERITY_HOST, VERITY_PORT      where to listen (127.0.0.1:8000)
  VERITY_WEB_WORKERS            processes (default: the cores this process may use)
  VERITY_FORWARDED_ALLOW_IPS    addresses whose X-Forwarded-For and X-Forwarded-Proto are
                                believed: the reverse proxy's (default 127.0.0.1)

A Python process computes on one core at a time however many threads it runs, and every
view here is synchronous Python: using more cores takes more processes. They share nothing
but PostgreSQL (sessions too) and Redis (the channel layer carries WebSocket messages
between them). This module does not import Django: each worker process loads the site.
"""

from __future__ import annotations

import os


def default_workers() -> int:
    # The cores this process may run on (a container's CPU set), not the host's count.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def main() -> None:
    import uvicorn

    uvicorn.run(
        "webapp.asgi:application",
        host=os.environ.get("VERITY_HOST", "127.0.0.1"),
        port=int(os.environ.get("VERITY_PORT", "8000")),
        workers=int(os.environ.get("VERITY_WEB_WORKERS") or default_workers()),
        # The client address (sign-in lockouts key on it) and the scheme come from the
        # proxy's headers only when the proxy is trusted; anyone else could forge them.
        proxy_headers=True,
        forwarded_allow_ips=os.environ.get("VERITY_FORWARDED_ALLOW_IPS", "127.0.0.1"),
        # Channels' router refuses ASGI lifespan events; Django needs none.
        lifespan="off",
        # Requests still running when told to stop get this long, then are cut.
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
