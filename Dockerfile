# One image for the web server, the inference worker and the training worker.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=webapp.settings.production VERITY_VAR_DIR=/data
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY detector ./detector
COPY webapp ./webapp
COPY worker ./worker
RUN pip install ".[s3]"
COPY manage.py ./
COPY models ./models
COPY scripts ./scripts
RUN DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput
RUN useradd --create-home verity && mkdir -p /data && chown verity /data
USER verity
EXPOSE 8000
# uvicorn with one process per core (VERITY_WEB_WORKERS), HTTP and WebSocket.
ENV VERITY_HOST=0.0.0.0 VERITY_PORT=8000
CMD ["python", "-m", "webapp.server"]
