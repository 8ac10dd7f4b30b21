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
# headless Chromium + chromedriver for the dashboard tests (Selenium drives Debian's
# Chromium: nothing is downloaded at test time)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
# a real Prometheus that the metrics tests start on 127.0.0.1 and let scrape our daemons
command -v prometheus >/dev/null || need_apt+=(prometheus)
# PostgreSQL server binaries for the hub's PostgreSQL store and HA tests (the tests run
# their own private server in a temp dir; Debian's system cluster is never started)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${need_apt[*]}" >&2
    # keep Debian from starting the packages' own services (a system PostgreSQL cluster,
    # a system Prometheus) while installing: a policy-rc.d that refuses, removed after
    made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      made_policy=1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
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
