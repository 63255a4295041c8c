#
# Two images from one file (see docs/operations.md):
#   docker build --target bot    -t demix-bot .
#   docker build --target worker -t demix-worker .                        # models mounted
#   docker build --target worker -t demix-worker --build-arg BAKE_MODELS=1 .  # models inside
#
# Both start from the same Python base and the same `runtime` stage (user, paths, pip
# settings). The bot image has no torch; it has ffmpeg for the mixer's web server, which
# runs from it (the bot never decodes audio). The worker image adds ffmpeg and torch from PyPI: PyPI's torch wheel for Linux is the CUDA build and
# brings its CUDA libraries, the host brings the driver (NVIDIA Container Toolkit). No
# `# syntax=` line and no other base image: the build needs no image but the Python one.
#
# The whole project is copied (`COPY . .`, trimmed by .dockerignore), so a new package is
# never left out; pyproject.toml decides what gets installed. `pip install .` compiles the
# translations (.po → .mo, setup.py) with Babel in its isolated build environment, so Babel
# stays out of both images; each build stage checks that the catalogs are there.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- shared by both images ---------------------------------------------------------------

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/demix demix
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# --- bot ---------------------------------------------------------------------------------

FROM runtime AS bot-build
RUN python -m venv /opt/venv
WORKDIR /src
COPY . .
# The base install only (no `worker` extra): no torch, demucs or numpy in this image.
RUN pip install . \
    && cd / && python -c "import sys, demix.cli, bot.app, demix.stats, demix.health, web.app; \
assert 'torch' not in sys.modules, 'the bot imports torch'; \
assert (web.app.STATIC_DIR / 'mixer.html').is_file(), 'no mixer page'; \
from common.i18n import missing_catalogs; assert not missing_catalogs(), missing_catalogs()"

FROM runtime AS bot
# ffmpeg for the mixer (`demix web`): it decodes the delivered tracks for their waveforms
# and renders mixes (Debian's build has the rubberband filter for tempo and pitch). The
# bot itself never decodes audio.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/* \
    && ffmpeg -hide_banner -filters | grep -q rubberband \
    && mkdir -p /data && chown demix:demix /data
COPY --from=bot-build /opt/venv /opt/venv
ENV DEMIX_DATA_DIR=/data \
    DEMIX_DB_PATH=/data/demix.sqlite3
USER demix
WORKDIR /data
VOLUME ["/data"]
# getMe with the configured token and Bot API: the token is valid and Telegram reachable.
HEALTHCHECK --interval=60s --timeout=20s --start-period=30s --retries=3 \
    CMD ["python", "-m", "demix.health", "bot"]
# PTB stops polling cleanly on SIGTERM. The same image runs the mixer's web server
# (`demix web`, port 8080; docker-compose.yml's `web` service, with its own health check).
STOPSIGNAL SIGTERM
EXPOSE 8080
CMD ["demix", "bot"]

# --- worker ------------------------------------------------------------------------------

FROM runtime AS worker-runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /models /cache \
    && chown demix:demix /models /cache

FROM worker-runtime AS worker-build
# PyPI's torch 2.13.0 for Linux is the CUDA build; pinned as `make install` pins it.
# TORCH_FIND_LINKS=/wheels offers pip the wheels put in wheels/ (nothing by default): the
# Compose end-to-end check puts this machine's CPU wheel there and sets
# TORCH_SPEC=torch==2.13.0+cpu, so that it does not fetch GBs of CUDA libraries.
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_FIND_LINKS=
RUN python -m venv /opt/venv
COPY wheels/ /wheels/
# torch first and alone: its layer (GBs) stays cached while the project changes.
RUN pip install ${TORCH_FIND_LINKS:+--find-links "$TORCH_FIND_LINKS"} "${TORCH_SPEC}"
WORKDIR /src
COPY . .
RUN pip install ".[worker]" \
    && cd / && python -c "import torch, demucs, worker.app; print('torch', torch.__version__); \
from common.i18n import missing_catalogs; assert not missing_catalogs(), missing_catalogs()"

# Optional: the model folder inside the image (BAKE_MODELS=1), fetched and checked at build.
FROM worker-build AS models
ARG BAKE_MODELS=0
ARG DEMIX_MODELS=htdemucs_ft,htdemucs_6s
RUN mkdir -p /models \
    && if [ "$BAKE_MODELS" = "1" ]; then \
        DEMIX_MODELS="$DEMIX_MODELS" demix models fetch --to /models \
        && DEMIX_MODELS="$DEMIX_MODELS" DEMIX_DEVICE=cpu demix models check --repo /models; \
    fi

FROM worker-runtime AS worker
COPY --from=worker-build /opt/venv /opt/venv
COPY --from=models --chown=demix:demix /models /models
ENV DEMIX_MODEL_REPO=/models \
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
