#!/usr/bin/env bash
# Set up everything this project needs on a fresh Debian machine: the system packages
# the tests use and a virtual environment (.venv) with the pinned Python packages.
# Idempotent and quiet when there is nothing to do.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v unshare >/dev/null || need_apt+=(util-linux)
# a real systemd (and systemd-analyze) for tests/test_systemd_backend.py's private systemd --user
{ command -v systemctl >/dev/null && [ -x /lib/systemd/systemd ]; } || need_apt+=(systemd)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${need_apt[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "bootstrap: please install: ${need_apt[*]}" >&2
  fi
fi

PY=${PYTHON:-python3}
stamp=.venv/.bootstrap-stamp
want=$(cat requirements.lock requirements-dev.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: creating .venv" >&2
  "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.lock
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi
