# syntax=docker/dockerfile:1
# Sluice's image: `docker build -t sluice .` then `docker run -p 8787:8787 -e OPENAI_API_KEY sluice`.
# Wheels are built in a builder stage; the final stage has no compilers and runs as non-root.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
# Compilers only for a dependency that has no wheel for this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sluice ./sluice
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 sluice \
    && useradd --system --uid 10001 --gid sluice --home-dir /var/lib/sluice --create-home sluice
COPY --from=builder /wheels /wheels
# pip compiles the bytecode at install time, so the first start imports without compiling.
RUN pip install --no-index --find-links=/wheels sluice && rm -rf /wheels
# The working directory holds the embedded default storage, ./sluice.db (mount a volume here
# to keep it); PostgreSQL is configured with SLUICE_DATABASE_URL instead.
WORKDIR /var/lib/sluice
USER 10001:10001
EXPOSE 8787
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8787/health/live', timeout=2).status == 200 else 1)"]
# exec form: sluice is PID 1 and gets SIGTERM itself, so `docker stop` drains (SPEC §6);
# give it time: `docker stop -t 40` / stop_grace_period > drain_timeout_s.
ENTRYPOINT ["sluice"]
CMD ["serve", "--host", "0.0.0.0"]
