"""docker-compose.yml lines up with the settings and the Celery queues (no Docker
engine runs here, so the file is checked by parsing it)."""

from __future__ import annotations

from pathlib import Path

import yaml

from worker.celery import CeleryQueue

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _queues(command: str) -> set[str]:
    parts = command.split()
    return set(parts[parts.index("-Q") + 1].split(","))


def test_it_defines_one_image_for_web_and_workers_plus_redis_and_postgres():
    services = _compose()["services"]
    assert {"web", "inference-worker", "training-worker", "redis", "postgres"} <= services.keys()
    images = {services[s]["image"] for s in ("web", "inference-worker", "training-worker")}
    assert images == {"verity:latest"}
    assert all(services[s]["build"] == "." for s in ("web", "inference-worker", "training-worker"))
    assert (ROOT / "Dockerfile").exists()


def test_the_workers_consume_every_queue_named_in_the_celery_app():
    services = _compose()["services"]
    inference = _queues(services["inference-worker"]["command"])
    training = _queues(services["training-worker"]["command"])
    assert CeleryQueue.INFERENCE.value in inference and CeleryQueue.TRAINING.value in training
    assert inference | training == {q.value for q in CeleryQueue}
    # The inference worker reserves a GPU when the host has one.
    devices = services["inference-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_the_environment_matches_what_the_settings_read():
    services = _compose()["services"]
    settings_text = "".join(
        (ROOT / "webapp" / name).read_text()
        for name in ("settings/base.py", "settings/production.py", "server.py")
    )
    for name in ("web", "inference-worker", "training-worker"):
        env = services[name]["environment"]
        assert env["DJANGO_SETTINGS_MODULE"] == "webapp.settings.production"
        assert (
            env["DATABASE_URL"].startswith("postgres://")
            and "@postgres:5432/" in env["DATABASE_URL"]
        )
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        for key in env:
            if (
                key.startswith(("DJANGO_", "VERITY_", "DATABASE_URL", "REDIS_URL"))
                and key != "DJANGO_SETTINGS_MODULE"
            ):
                assert f'"{key}"' in settings_text, f"{key} is not read by the settings"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_web_server_believes_forwarded_headers_only_from_the_proxy():
    web = _compose()["services"]["web"]
    assert "webapp.server" in web["command"] and web["environment"]["VERITY_HOST"] == "0.0.0.0"
    # Not "*": a client that reaches port 8000 directly could forge its address.
    assert "*" not in web["environment"]["VERITY_FORWARDED_ALLOW_IPS"]


def test_stateful_services_have_volumes_and_health_checks():
    c = _compose()
    for name in ("redis", "postgres", "web"):
        assert "healthcheck" in c["services"][name]
    assert {"media", "redis", "postgres"} <= c["volumes"].keys()
    assert c["services"]["web"]["ports"] == ["8000:8000"]
    assert "/health/" in str(c["services"]["web"]["healthcheck"]["test"])


def test_object_storage_is_configured_from_the_environment():
    import subprocess
    import sys

    code = "import django; django.setup(); from django.conf import settings; print(settings.STORAGES['default']['BACKEND'], settings.STORAGES['default']['OPTIONS']['bucket_name'])"
    env = {
        "DJANGO_SETTINGS_MODULE": "webapp.settings.local",
        "VERITY_S3_BUCKET": "verity-media",
        "VERITY_S3_ENDPOINT_URL": "http://minio:9000",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["storages.backends.s3.S3Storage", "verity-media"]
