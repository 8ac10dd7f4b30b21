#!/usr/bin/env bash
# The whole test suite, as CI runs it: bootstrap, generated-code drift, lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
echo "== generated code drift"
.venv/bin/python scripts/gen_protos.py --check
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict"
.venv/bin/mypy backendai manager hub agent aictl
echo "== pytest"
# two workers (pytest-xdist); `scripts/test.sh -n 0 ...` runs in one process
exec .venv/bin/pytest -q -n "${TEST_WORKERS:-2}" --dist worksteal "$@"
