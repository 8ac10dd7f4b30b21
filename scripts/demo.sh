#!/usr/bin/env bash
# The main job on a fresh machine: set up, then run the local demo fleet and a staged
# rollout (`aictl demo`). Extra arguments go to `aictl demo` (e.g. --agents 5 --once).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/aictl demo "$@"
