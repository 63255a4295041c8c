# syntax=docker/dockerfile:1
#
# Two images from one file (see docs/operations.md):
#   docker build --target bot    -t demix-bot .
#   docker build --target worker -t demix-worker .                        # models mounted
#   docker build --target worker -t demix-worker --build-arg BAKE_MODELS=1 .  # models inside
#
# The bot image has no torch, CUDA or ffmpeg: the bot never decodes audio. The worker image
# runs on a CUDA base; torch's own wheel brings the CUDA libraries, the host brings the
# driver (NVIDIA Container Toolkit).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04

# --- bot ---------------------------------------------------------------------------------

FROM ${PYTHON_IMAGE} AS bot-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY demix ./demix
COPY separation ./separation
COPY storage ./storage
# The base install only (no `worker` extra): no torch, demucs or numpy in this image.
RUN pip install . \
    && python -c "import sys, demix.cli, bot.app, demix.stats, demix.health; \
assert 'torch' not in sys.modules, 'the bot imports torch'"

FROM ${PYTHON_IMAGE} AS bot
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/demix demix \
    && mkdir -p /data \
    && chown demix:demix /data
COPY --from=bot-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DEMIX_DATA_DIR=/data \
    DEMIX_DB_PATH=/data/demix.sqlite3
USER demix
WORKDIR /data
VOLUME ["/data"]
# getMe with the configured token and Bot API: the token is valid and Telegram reachable.
HEALTHCHECK --interval=60s --timeout=20s --start-period=30s --retries=3 \
    CMD ["python", "-m", "demix.health", "bot"]
# PTB stops polling cleanly on SIGTERM.
STOPSIGNAL SIGTERM
CMD ["demix", "bot"]

# --- worker ------------------------------------------------------------------------------

FROM ${CUDA_IMAGE} AS worker-base
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ffmpeg ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM worker-base AS worker-build
# The default PyPI wheel of torch is the CUDA build; pin it as `make install` does.
ARG TORCH_SPEC=torch==2.13.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first and alone: its layer (GBs) stays cached while the project changes.
RUN pip install "${TORCH_SPEC}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY demix ./demix
COPY separation ./separation
COPY storage ./storage
RUN pip install ".[worker]"

# Optional: the model folder inside the image (BAKE_MODELS=1), fetched and checked at build.
FROM worker-build AS models
ARG BAKE_MODELS=0
ARG DEMIX_MODELS=htdemucs_ft,htdemucs_6s
RUN mkdir -p /models \
    && if [ "$BAKE_MODELS" = "1" ]; then \
        DEMIX_MODELS="$DEMIX_MODELS" demix models fetch --to /models \
        && DEMIX_MODELS="$DEMIX_MODELS" DEMIX_DEVICE=cpu demix models check --repo /models; \
    fi

FROM worker-base AS worker
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/demix demix \
    && mkdir -p /models /cache \
    && chown demix:demix /models /cache
COPY --from=worker-build /opt/venv /opt/venv
COPY --from=models --chown=demix:demix /models /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DEMIX_MODEL_REPO=/models \
    DEMIX_CACHE_DIR=/cache \
    DEMIX_DATA_DIR=/cache \
    DEMIX_DEVICE=auto \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER demix
WORKDIR /cache
VOLUME ["/cache"]
# arq's health check: a live worker refreshes its health key in Redis.
HEALTHCHECK --interval=60s --timeout=20s --start-period=120s --retries=3 \
    CMD ["python", "-m", "demix.health", "worker"]
# arq stops taking jobs on SIGTERM; unfinished jobs are retried by another worker.
STOPSIGNAL SIGTERM
CMD ["demix", "worker"]
