#!/usr/bin/env bash
# deploy/update-versions.sh VERSION — the seeds' deployment flow, for real hosts:
#   1. build the hub and agent packages of VERSION from this checkout (signed when a key
#      is given),
#   2. publish them to the package store (the NAS: STORE/VERSION/...),
#   3. tell the hub manager to update the hub, then let the hub roll VERSION out to the
#      agents in waves (a canary first, each wave gated on health, halting and rolling
#      back on failure).
# Steps 3's "hub first, then agents" is one staged rollout with --include-hub: the hub
# asks its own manager to update it, the new hub comes up and resumes the agent waves.
#
# Settings (environment; command-line flags override):
#   STORE              package store base URL   (--store)    e.g. http://nas:8888/api/raw
#   STORE_CREDENTIALS  file: "user:password" or "Bearer TOKEN" for an HTTP store
#   SIGNING_KEY        Ed25519 private key (aictl release keygen) to sign SHA256SUMS
#   HUB                hub gRPC address          (--hub)      default 127.0.0.1:3000
#   HUB_TOKEN_FILE     bearer token file for the hub
#   WAVES              rollout waves             (--waves)    default 1,10%,50%,100%
#   ROLLOUT_FLAGS      more `aictl rollout start` flags, e.g. "--max-failures 2 --pause 60"
#   BUILD_DIR          where packages are built  default ./dist
#   AICTL              the aictl to use          default: .venv/bin/aictl of this checkout
#
# Options: --dry-run (show the wave plan, change nothing), --no-build (publish what is in
# BUILD_DIR), --no-publish, --skip-hub (agents only), --yes (no confirmation prompt).
# Exit status: 0 when every targeted host runs VERSION; non-zero otherwise.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

version=""
dry_run=0 build=1 publish=1 include_hub=1 assume_yes=0
store=${STORE:-}
hub=${HUB:-127.0.0.1:3000}
waves=${WAVES:-1,10%,50%,100%}
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage 0 ;;
    --dry-run) dry_run=1 ;;
    --no-build) build=0 ;;
    --no-publish) publish=0 ;;
    --skip-hub) include_hub=0 ;;
    --yes|-y) assume_yes=1 ;;
    --store) store=${2:?--store needs a URL}; shift ;;
    --hub) hub=${2:?--hub needs HOST:PORT}; shift ;;
    --waves) waves=${2:?--waves needs a list}; shift ;;
    -*) echo "update-versions.sh: unknown option $1" >&2; usage 2 ;;
    *) [ -z "$version" ] || { echo "update-versions.sh: one VERSION only" >&2; exit 2; }
       version=$1 ;;
  esac
  shift
done
[ -n "$version" ] || { echo "update-versions.sh: VERSION is required" >&2; usage 2; }
# Versions name directories and files: no path characters, no leading dot or dash.
if ! [[ "$version" =~ ^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$ ]] || [[ "$version" == *..* ]]; then
  echo "update-versions.sh: invalid version '$version' (letters, digits, . _ + -)" >&2
  exit 2
fi

aictl=${AICTL:-$here/.venv/bin/aictl}
[ -x "$aictl" ] || { echo "update-versions.sh: $aictl not found; run scripts/bootstrap.sh" >&2; exit 2; }
build_dir=${BUILD_DIR:-$here/dist}
hub_args=(--hub "$hub")
[ -n "${HUB_TOKEN_FILE:-}" ] && hub_args+=(--token-file "$HUB_TOKEN_FILE")
# One seed for the plan shown and the rollout started, so the waves are the ones shown.
seed=${SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
rollout_args=(rollout start "$version" "${hub_args[@]}" --waves "$waves" --seed "$seed")
[ "$include_hub" -eq 1 ] && rollout_args+=(--include-hub)
# shellcheck disable=SC2206 # ROLLOUT_FLAGS is a list of flags on purpose
[ -n "${ROLLOUT_FLAGS:-}" ] && rollout_args+=(${ROLLOUT_FLAGS})

if [ "$dry_run" -eq 1 ]; then
  echo "== plan for $version (nothing is built, published or updated)"
  exec "$aictl" "${rollout_args[@]}" --dry-run
fi

if [ "$build" -eq 1 ]; then
  echo "== 1/3 building hub and agent $version into $build_dir"
  build_args=(release build "$version" --out "$build_dir")
  [ -n "${SIGNING_KEY:-}" ] && build_args+=(--key "$SIGNING_KEY")
  "$aictl" "${build_args[@]}"
fi

if [ "$publish" -eq 1 ]; then
  [ -n "$store" ] || { echo "update-versions.sh: set STORE or --store to publish" >&2; exit 2; }
  echo "== 2/3 publishing $version to $store"
  publish_args=(release publish "$version" --out "$build_dir" --to "$store")
  [ -n "${STORE_CREDENTIALS:-}" ] && publish_args+=(--credentials "$STORE_CREDENTIALS")
  "$aictl" "${publish_args[@]}"
fi

echo "== 3/3 rolling $version out: $([ "$include_hub" -eq 1 ] && echo "the hub first, then ")the agents in waves $waves"
"$aictl" "${rollout_args[@]}" --dry-run
if [ "$assume_yes" -ne 1 ]; then
  if [ -t 0 ]; then
    read -r -p "start this rollout? [y/N] " answer
    [[ "$answer" =~ ^[Yy] ]] || { echo "not started"; exit 1; }
  else
    echo "update-versions.sh: not a terminal; pass --yes to start without asking" >&2
    exit 2
  fi
fi
exec "$aictl" "${rollout_args[@]}" --watch
