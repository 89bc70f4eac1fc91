"""Load on the real stack: PostgreSQL with 10,000 analyses, daphne, Redis, Celery workers.

    .venv/bin/python bench/load.py [--users 50] [--rows 10000] [--seconds 30] [--clips 20]

Prints a table of:
  - history page, API list and status polling latency (p50, p95, errors) with N
    concurrent signed-in users;
  - WebSocket progress latency: from publish (what a worker does) to receipt by a client;
  - resident memory of the web and worker processes;
  - time for a batch of clips to clear the queue with one and with two workers.
Uses its own database (verity_bench) and Redis database 8; never the site's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB_NAME = "verity_bench"
os.environ.setdefault("DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{DB_NAME}")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/8")
os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings.local"
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("VERITY_MEDIA_ROOT", str(ROOT / "var" / "bench-media"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def ensure_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone():
            conn.execute(f"CREATE DATABASE {DB_NAME}")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def seed(users: int, rows: int):
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from webapp.analyses.models import Analysis

    User = get_user_model()
    made = []
    for i in range(users):
        u, _ = User.objects.get_or_create(username=f"load{i:03d}")
        made.append(u)
    have = Analysis.objects.filter(owner__in=made).count()
    per_user = rows // users
    if have < rows:
        now = timezone.now()
        batch = []
        for u in made:
            for j in range(per_user):
                batch.append(
                    Analysis(
                        owner=u,
                        original_name=f"clip-{j:04d}.mp4",
                        original=f"uploads/{u.id}/seed/{j}.mp4",
                        status="done",
                        progress=100,
                        stage="done",
                        verdict={
                            "label": "real",
                            "fake_probability": 0.1,
                            "confidence": 0.9,
                            "threshold": 0.5,
                        },
                        verdict_label="real",
                        duration=10.0,
                        model_version="seed",
                        created=now - timezone.timedelta(minutes=j),
                        finished=now,
                    )
                )
        Analysis.objects.filter(owner__in=made).delete()
        Analysis.objects.bulk_create(batch, batch_size=2000)
    return made


def session_cookie(user) -> str:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    s = SessionStore()
    s[SESSION_KEY] = str(user.pk)
    s[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    s[HASH_SESSION_KEY] = user.get_session_auth_hash()
    s.create()
    return s.session_key


def browse(base: str, users, seconds: float) -> dict[str, dict]:
    """Each user, in its own thread: history page, API list, status poll, in a loop."""
    import requests

    from webapp.analyses.models import Analysis

    results: dict[str, list[float]] = {"history page": [], "API list": [], "status poll": []}
    errors = {k: 0 for k in results}
    lock = threading.Lock()
    stop = time.time() + seconds

    def run(user) -> None:
        sess = requests.Session()
        sess.cookies.set("sessionid", session_cookie(user))
        ids = list(Analysis.objects.filter(owner=user).values_list("id", flat=True)[:20])
        from django.db import connection

        connection.close()  # this thread is done with the database; don't hold a slot
        k = 0
        while time.time() < stop:
            for name, url in (
                ("history page", f"{base}/?page={1 + k % 5}"),
                ("API list", f"{base}/api/analyses/?page={1 + k % 5}"),
                ("status poll", f"{base}/analyses/{ids[k % len(ids)]}/state/"),
            ):
                t = time.perf_counter()
                try:
                    ok = sess.get(url, timeout=10).status_code == 200
                except requests.RequestException:
                    ok = False
                dt = time.perf_counter() - t
                with lock:
                    results[name].append(dt)
                    errors[name] += 0 if ok else 1
            k += 1

    threads = [threading.Thread(target=run, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        k: {
            "n": len(v),
            "p50": pct(v, 50),
            "p95": pct(v, 95),
            "errors": errors[k],
            "rps": len(v) / seconds,
        }
        for k, v in results.items()
    }


def ws_latency(port: int, user, samples: int = 100) -> dict:
    import websockets

    from webapp.analyses.models import Analysis
    from webapp.live.publish import analysis_group, publish

    a = Analysis.objects.filter(owner=user).first()
    cookie = session_cookie(user)
    lat: list[float] = []

    async def main() -> None:
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/ws/analyses/{a.id}/",
            additional_headers={
                "Cookie": f"sessionid={cookie}",
                "Origin": f"http://127.0.0.1:{port}",
            },
        ) as ws:
            await ws.recv()  # the current state, sent on connect
            loop = asyncio.get_running_loop()
            for i in range(samples):
                t = time.perf_counter()
                await loop.run_in_executor(None, publish, analysis_group(a.id), {"seq": i})
                while json.loads(await ws.recv()).get("seq") != i:
                    pass
                lat.append(time.perf_counter() - t)
                await asyncio.sleep(0.02)

    asyncio.run(main())
    return {"n": len(lat), "p50": pct(lat, 50), "p95": pct(lat, 95)}


def rss(pid: int) -> float:
    import psutil

    p = psutil.Process(pid)
    return sum(c.memory_info().rss for c in [p, *p.children(recursive=True)]) / 1024**3


def drain(stack, user, clip: Path, n: int, workers: int) -> tuple[float, float]:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from webapp.analyses.models import Analysis
    from webapp.analyses.submit import create_analysis

    procs = [stack.start_worker(f"bench{i}") for i in range(workers)]
    data = clip.read_bytes()
    t = time.perf_counter()
    ids = [create_analysis(user, SimpleUploadedFile(f"b{i}.mp4", data)).id for i in range(n)]
    peak = 0.0
    while Analysis.objects.filter(id__in=ids, status__in=("queued", "running")).exists():
        peak = max(peak, max(rss(p.pid) for p in procs))
        time.sleep(0.5)
    elapsed = time.perf_counter() - t
    for p in procs:
        p.terminate()
        p.wait(30)
        stack.workers.remove(p)
    return elapsed, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--clips", type=int, default=20)
    args = ap.parse_args()
    ensure_database()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from tests.e2e.stack import Stack
    from tests.media import astronaut_clip

    # The bench process itself sends tasks with the settings' limits; raise the fair-use caps.
    settings.VERITY_MAX_QUEUED_PER_USER = 10_000
    os.environ["VERITY_MAX_QUEUED_PER_USER"] = "10000"
    os.environ["VERITY_MAX_RUNNING_PER_USER"] = "10"
    call_command("migrate", verbosity=0)
    users = seed(args.users, args.rows)
    tmp = Path(tempfile.mkdtemp(prefix="verity-bench-"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings.local"
    stack = Stack(tmp)
    stack.env["DJANGO_SETTINGS_MODULE"] = "webapp.settings.local"
    stack.env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    stack.start_web()
    try:
        browse(stack.url, users[:5], 3)  # warm up connections and caches
        web = browse(stack.url, users, args.seconds)
        web_rss = rss(stack.web.pid)
        print(json.dumps(web), flush=True)
        ws = ws_latency(stack.port, users[0])
        print(json.dumps(ws), flush=True)
        clip = astronaut_clip(tmp / "clip.mp4", 150)  # 6 s, 640x480
        one, rss1 = drain(stack, users[0], clip, args.clips, 1)
        two, rss2 = drain(stack, users[1], clip, args.clips, 2)
    finally:
        stack.stop()

    print(
        f"Load on {os.cpu_count()} cores: {args.rows:,} analyses in PostgreSQL, {args.users} concurrent users for {args.seconds:.0f} s"
    )
    print(f"{'request':<28} {'n':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'errors':>6}")
    for name, r in web.items():
        print(
            f"{name:<28} {r['n']:>6} {r['rps']:>7.1f} {r['p50'] * 1000:>8.1f} {r['p95'] * 1000:>8.1f} {r['errors']:>6}"
        )
    print(
        f"{'WebSocket publish->receipt':<28} {ws['n']:>6} {'':>7} {ws['p50'] * 1000:>8.1f} {ws['p95'] * 1000:>8.1f} {0:>6}"
    )
    print()
    print(f"{'process':<28} {'RSS GiB':>8}")
    print(f"{'web (daphne), after load':<28} {web_rss:>8.2f}")
    print(f"{'inference worker, peak':<28} {max(rss1, rss2):>8.2f}")
    print()
    print(
        f"{'queue of ' + str(args.clips) + ' clips (6 s each)':<28} {'seconds':>8} {'clips/min':>9}"
    )
    print(f"{'one worker':<28} {one:>8.1f} {args.clips / one * 60:>9.1f}")
    print(f"{'two workers':<28} {two:>8.1f} {args.clips / two * 60:>9.1f}")


if __name__ == "__main__":
    main()
