"""Load on the real stack: PostgreSQL with 10,000 analyses, uvicorn (one process per core),
Redis, Celery workers.

    .venv/bin/python bench/load.py [--users 50] [--rows 10000] [--seconds 30] [--think 1-3]
                                   [--clips 20] [--web-workers N] [--seed 1]

The users. Each of --users signed-in users has its own cookies and connections, as a
browser has, and does two things at once until the time is up:
  - browses: its history page 1, then the same page through the API (as a script of
    theirs would fetch it), then page 2 of each, and so on to page 5 and back to 1, with a
    think time after each view drawn uniformly from --think MIN-MAX seconds (default 1-3);
  - polls the status of one of its analyses every --poll seconds (default 2), as an open
    result page does when its WebSocket is blocked (webapp/static/verity/detail.js). That
    is more than real pages ask: a page polls only while its analysis is queued or
    running, and only without its WebSocket.
Users arrive at random within the first think time. Random draws use --seed, so two runs
offer the same load. At the defaults, 50 users offer about 50 requests a second.

`--think 0` is the saturation test instead: each user repeats history page, API list and
status poll back to back with no pause (a closed loop). Latency then only says how long the
queue is; the throughput is the site's capacity on this machine.

Prints a table of:
  - history page, API list and status poll latency (p50, p95, errors) and throughput;
  - the CPU that the web server and the load generator used meanwhile: they share the
    machine, so the generator is one asyncio loop (aiohttp) in this process, not a thread
    per user;
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
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
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

REQUESTS = ("history page", "API list", "status poll")
PAGES = 5  # each user walks through this many pages of its history


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


def seed_report(j: int) -> dict:
    """A report the size of a real one: 32 sampled frames with one face each."""
    return {
        "schema_version": "1",
        "verdict": {"label": "real", "fake_probability": 0.1, "threshold": 0.5},
        "frames": [
            {
                "index": 9 * i,
                "time": 0.3 * i,
                "faces": [{"box": [210, 120, 330, 260], "fake_probability": 0.1, "track_id": 0}],
            }
            for i in range(32)
        ],
        "tracks": [{"id": 0, "first_frame": 0, "last_frame": 279, "faces": 32, "label": "real"}],
        "model": {"name": "seed", "version": "seed", "input_size": 128},
        "timings": {"read": 0.2, "detect": 1.6, "classify": 0.6, "render": 2.6, "total": 5.0 + j},
    }


def seed(users: int, rows: int):
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from webapp.analyses.models import Analysis

    User = get_user_model()
    made = []
    for i in range(users):
        u, _ = User.objects.get_or_create(username=f"load{i:03d}")
        made.append(u)
    have = Analysis.objects.filter(owner__in=made).count()
    have_reports = Analysis.objects.filter(owner__in=made, report__isnull=False).count()
    per_user = rows // users
    if have < rows or have_reports < have:
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
                        report=seed_report(j),
                        duration=10.0,
                        model_version="seed",
                        created=now - timezone.timedelta(minutes=j),
                        finished=now,
                    )
                )
        Analysis.objects.filter(owner__in=made).delete()
        Analysis.objects.bulk_create(batch, batch_size=2000)
    # Planner statistics, as a database that grew to this size would have.
    with connection.cursor() as c:
        c.execute("ANALYZE")
    return made


def session_cookie(user) -> str:
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    s = import_module(settings.SESSION_ENGINE).SessionStore()
    s[SESSION_KEY] = str(user.pk)
    s[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    s[HASH_SESSION_KEY] = user.get_session_auth_hash()
    s.create()
    return s.session_key


@dataclass
class User:
    cookie: str
    analysis_ids: list[str]
    rng: random.Random


@dataclass
class Samples:
    seconds: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in REQUESTS})
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REQUESTS, 0))


def prepare_users(users, seed_value: int) -> list[User]:
    """Sessions and analysis ids, read before the load starts: the load generator's event
    loop never touches the database."""
    from webapp.analyses.models import Analysis

    out = []
    for i, u in enumerate(users):
        ids = Analysis.objects.filter(owner=u).values_list("id", flat=True)[: 20 * PAGES]
        out.append(User(session_cookie(u), [str(x) for x in ids], random.Random(seed_value + i)))
    return out


async def browse(
    base: str, users: list[User], seconds: float, think: tuple[float, float], poll: float
) -> Samples:
    """Runs the users (see the module's docstring) for `seconds`; returns every latency."""
    import aiohttp

    samples = Samples()
    stop = time.perf_counter() + seconds
    closed_loop = think[1] <= 0
    timeout = aiohttp.ClientTimeout(total=10)

    async def get(session, name: str, url: str) -> None:
        t = time.perf_counter()
        try:
            async with session.get(url) as r:
                await r.read()
                ok = r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        samples.seconds[name].append(time.perf_counter() - t)
        samples.errors[name] += 0 if ok else 1

    async def views(user: User, session) -> None:
        k = 0
        while True:
            page = 1 + k % PAGES
            steps = [
                ("history page", f"/?page={page}"),
                ("API list", f"/api/analyses/?page={page}"),
            ]
            if closed_loop:
                steps.append(("status poll", f"/analyses/{user.analysis_ids[0]}/state/"))
            for name, path in steps:
                if time.perf_counter() >= stop:
                    return
                await get(session, name, base + path)
                # Thinking, but not past the end of the run.
                await asyncio.sleep(min(user.rng.uniform(*think), stop - time.perf_counter()))
            k += 1

    async def polls(user: User, session) -> None:
        # setInterval's cadence: every `poll` seconds from the last start, whatever the
        # latency, and at once when a request took longer than that.
        url = f"{base}/analyses/{user.rng.choice(user.analysis_ids)}/state/"
        next_at = time.perf_counter() + user.rng.uniform(0, poll)
        while next_at < stop:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += poll
            await get(session, "status poll", url)

    async def run(user: User) -> None:
        await asyncio.sleep(0 if closed_loop else user.rng.uniform(0, think[1]))
        # aiohttp keeps no cookies for an IP address: send the session's as a header.
        async with aiohttp.ClientSession(
            headers={"Cookie": f"sessionid={user.cookie}"},
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=timeout,
        ) as session:
            if closed_loop:
                await views(user, session)
            else:
                await asyncio.gather(views(user, session), polls(user, session))

    await asyncio.gather(*(run(u) for u in users))
    return samples


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children, so far."""
    import psutil

    p = psutil.Process(pid)
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        t = q.cpu_times()
        total += t.user + t.system
    return total


def busy_seconds() -> float:
    """CPU time the whole machine has spent busy, over all cores, so far."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def measure_load(stack, users: list[User], seconds: float, think, poll: float) -> dict:
    web0, gen0, all0 = cpu_seconds(stack.web.pid), time.process_time(), busy_seconds()
    wall0 = time.perf_counter()
    samples = asyncio.run(browse(stack.url, users, seconds, think, poll))
    wall = time.perf_counter() - wall0
    web, gen = cpu_seconds(stack.web.pid) - web0, time.process_time() - gen0
    machine = busy_seconds() - all0
    rows = {
        k: {
            "n": len(v),
            "rps": len(v) / wall,
            "p50": pct(v, 50),
            "p95": pct(v, 95),
            "errors": samples.errors[k],
        }
        for k, v in samples.seconds.items()
    }
    return {
        "rows": rows,
        "wall": wall,
        "web_cpu": web,
        "generator_cpu": gen,
        "machine_cpu": machine,
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


def think_range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    lo, hi = float(low), float(high or low)
    if not 0 <= lo <= hi:
        raise argparse.ArgumentTypeError("think time: SECONDS or MIN-MAX, e.g. 0 or 1-3")
    return lo, hi


def user_model(think: tuple[float, float], poll: float) -> str:
    if think[1] <= 0:
        return "closed loop, no think time (saturation): history page, API list, status poll, back to back"
    return (
        f"history page and API list pages 1-{PAGES} with {think[0]:g}-{think[1]:g} s of think time "
        f"after each view; a status poll every {poll:g} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument(
        "--think",
        type=think_range,
        default=(1.0, 3.0),
        metavar="SECONDS|MIN-MAX",
        help="pause after each page view, uniform in MIN-MAX (default 1-3); 0: saturation",
    )
    ap.add_argument("--poll", type=float, default=2.0, help="status poll interval (s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--web-workers", type=int, default=None, help="default: one per core")
    ap.add_argument("--clips", type=int, default=20)
    args = ap.parse_args()
    ensure_database()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from tests.e2e.stack import Stack
    from tests.media import astronaut_clip
    from webapp.server import default_workers

    # The bench process itself sends tasks with the settings' limits; raise the fair-use caps.
    settings.VERITY_MAX_QUEUED_PER_USER = 10_000
    os.environ["VERITY_MAX_QUEUED_PER_USER"] = "10000"
    os.environ["VERITY_MAX_RUNNING_PER_USER"] = "10"
    call_command("migrate", verbosity=0)
    users = seed(args.users, args.rows)
    web_workers = args.web_workers or default_workers()
    tmp = Path(tempfile.mkdtemp(prefix="verity-bench-"))
    stack = Stack(tmp)
    stack.env["DJANGO_SETTINGS_MODULE"] = "webapp.settings.local"
    stack.env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    stack.env["VERITY_WEB_WORKERS"] = str(web_workers)
    stack.start_web()
    try:
        clients = prepare_users(users, args.seed)
        # Warm every web process up: connections, the pool, caches.
        measure_load(stack, clients[:10], 3, (0.0, 0.0), args.poll)
        load = measure_load(stack, clients, args.seconds, args.think, args.poll)
        web_rss = rss(stack.web.pid)
        print(json.dumps(load), flush=True)
        ws = ws_latency(stack.port, users[0])
        print(json.dumps(ws), flush=True)
        if args.clips:
            clip = astronaut_clip(tmp / "clip.mp4", 150)  # 6 s, 640x480
            # The one-off ONNX export, as a deployment does before serving (the training
            # worker does it for each new version): workers then load the cached export.
            from detector.model import ModelBundle

            ModelBundle.load(settings.VERITY_MODEL_DIR, runtime=settings.VERITY_RUNTIME)
            one, rss1 = drain(stack, users[0], clip, args.clips, 1)
            two, rss2 = drain(stack, users[1], clip, args.clips, 2)
    finally:
        stack.stop()

    cores = os.cpu_count()
    print(
        f"Load on {cores} cores: {args.rows:,} analyses in PostgreSQL, uvicorn with {web_workers} "
        f"processes, {args.users} users for {args.seconds:.0f} s"
    )
    print(f"Each user: {user_model(args.think, args.poll)}")
    print(f"{'request':<28} {'n':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'errors':>6}")
    for name, r in load["rows"].items():
        print(
            f"{name:<28} {r['n']:>6} {r['rps']:>7.1f} {r['p50'] * 1000:>8.1f} {r['p95'] * 1000:>8.1f} {r['errors']:>6}"
        )
    total = sum(r["n"] for r in load["rows"].values())
    label = "all (capacity)" if args.think[1] <= 0 else "all"
    print(f"{label:<28} {total:>6} {total / load['wall']:>7.1f}")
    print(
        f"{'WebSocket publish->receipt':<28} {ws['n']:>6} {'':>7} {ws['p50'] * 1000:>8.1f} {ws['p95'] * 1000:>8.1f} {0:>6}"
    )
    print()
    print(f"{'CPU during the load':<28} {'core-s':>8} {'cores':>6}")
    for name, key in (
        ("web server", "web_cpu"),
        ("load generator", "generator_cpu"),
        ("whole machine", "machine_cpu"),
    ):
        print(f"{name:<28} {load[key]:>8.1f} {load[key] / load['wall']:>6.2f}")
    print()
    print(f"{'process':<28} {'RSS GiB':>8}")
    print(f"{f'web (uvicorn, {web_workers} workers)':<28} {web_rss:>8.2f}")
    if args.clips:
        print(f"{'inference worker, peak':<28} {max(rss1, rss2):>8.2f}")
        print()
        print(
            f"{'queue of ' + str(args.clips) + ' clips (6 s each)':<28} {'seconds':>8} {'clips/min':>9}"
        )
        print(f"{'one worker':<28} {one:>8.1f} {args.clips / one * 60:>9.1f}")
        print(f"{'two workers':<28} {two:>8.1f} {args.clips / two * 60:>9.1f}")


if __name__ == "__main__":
    main()
