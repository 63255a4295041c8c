#!/usr/bin/env bash
# The Docker images and the Compose stack built and run for real (scripts/compose_e2e.py
# says what is checked):
#
#   scripts/compose-e2e.sh            # build both images, run the stack end to end (~5 min)
#   scripts/compose-e2e.sh --cheap    # compose config, bot image build and checks (CI)
#   scripts/compose-e2e.sh --keep     # leave the demix-e2e stack up afterwards
#
# A Docker engine with Compose v2 and the base images must be there; where
# ../shared/tools/docker-sandbox exists (DOCKER_SANDBOX names another), it is run first: it
# installs and starts the engine and makes the base images when they are missing.
# Exit code 3: no Docker engine could be had (nothing was checked).
set -euo pipefail
cd "$(dirname "$0")/.."
sandbox=${DOCKER_SANDBOX:-../shared/tools/docker-sandbox}
if [ -x "$sandbox" ]; then
  if ! "$sandbox" >&2; then
    echo "compose-e2e: no Docker engine: $sandbox failed" >&2
    exit 3
  fi
fi
if ! docker info >/dev/null 2>&1 || ! docker compose version >/dev/null 2>&1; then
  echo "compose-e2e: no Docker engine with Compose v2 (and no $sandbox to install one)" >&2
  exit 3
fi
exec "${VENV:-.venv}/bin/python" scripts/compose_e2e.py "$@"
