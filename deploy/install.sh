#!/usr/bin/env bash
# Put a host into service as a Backend AI hub or agent (see docs/DEPLOY.md).
#
#   deploy/install.sh [options] hub|agent
#
#   --release PATH        a release to install: agent-V.tar.gz / hub-V.tar.gz or an unpacked
#                         directory (its VERSION file names it); becomes releases/V, and
#                         current -> releases/V if there is no current yet
#   --prefix DIR          put every path under DIR (a scratch root; units are enabled with
#                         `systemctl --root`, nothing is started)
#   --rcd                 Unraid: install /etc/rc.d/rc.ai-agent{,-manager} and start them
#                         from /boot/config/go, instead of systemd units (agent only)
#   --systemd-user        install the units for `systemctl --user` (tests, user setups)
#   --no-start            enable but do not start
#   --no-venv             do not create the manager's virtual environment
#   --manager-source SRC  what pip installs into the manager venv: a source directory
#                         (default: this repository) or a wheel built elsewhere
#   --pip-args "ARGS"     extra arguments for that pip install (e.g. --no-index --find-links W)
#   --python PY           interpreter for the venv (default: python3)
#   --token-file FILE     use this manager token (the same on every host) instead of a new one
#   --http-listen ADDR    the manager's HTTP JSON API listens on ADDR (HOST:PORT) instead of
#                         127.0.0.1:3081 (loopback only); see docs/SECURITY.md before opening
#                         it to the network (token required; plain HTTP unless http_tls)
#   --restart-sec TIME    RestartSec= of the units (default 1s)
#   --uninstall           stop, disable and remove everything this script installs
#   --keep-state          with --uninstall: keep /var/lib/backend-ai
#
# Idempotent: a second run with the same arguments changes nothing (it prints one
# "changed:" line per change, and "unchanged" when there was none). Config files and the
# token are written once and never overwritten.
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=""
RELEASE=""
RCD=0
USER_MODE=0
START=1
VENV=1
MANAGER_SOURCE=$(dirname "$HERE")
PIP_ARGS=""
PYTHON=python3
TOKEN_SRC=""
HTTP_LISTEN=""
HTTP_LISTEN_SET=0
RESTART_SEC=1s
UNINSTALL=0
KEEP_STATE=0
ROLE=""
CHANGES=0

die() { echo "install.sh: $*" >&2; exit 2; }
changed() { echo "changed: $*"; CHANGES=$((CHANGES + 1)); }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift ;;
    --release) RELEASE=${2:?--release needs a path}; shift ;;
    --rcd) RCD=1 ;;
    --systemd-user) USER_MODE=1 ;;
    --no-start) START=0 ;;
    --no-venv) VENV=0 ;;
    --manager-source) MANAGER_SOURCE=${2:?}; shift ;;
    --pip-args) PIP_ARGS=${2?}; shift ;;
    --python) PYTHON=${2:?}; shift ;;
    --token-file) TOKEN_SRC=${2:?}; shift ;;
    --http-listen) [ $# -ge 2 ] || die "--http-listen needs HOST:PORT"
                   HTTP_LISTEN=$2; HTTP_LISTEN_SET=1; shift ;;
    --restart-sec) RESTART_SEC=${2:?}; shift ;;
    --uninstall) UNINSTALL=1 ;;
    --keep-state) KEEP_STATE=1 ;;
    hub|agent) [ -z "$ROLE" ] || die "only one role"; ROLE=$1 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
  shift
done
[ -n "$ROLE" ] || die "usage: install.sh [options] hub|agent"
if [ -n "$TOKEN_SRC" ] && [ ! -s "$TOKEN_SRC" ]; then die "--token-file: $TOKEN_SRC is missing or empty"; fi
if [ "$VENV" = 1 ] && [ "$UNINSTALL" = 0 ]; then
  if [ -f "$MANAGER_SOURCE" ]; then
    [[ "$MANAGER_SOURCE" = *.whl ]] || die "--manager-source: a directory or a .whl file"
  elif [ ! -f "$MANAGER_SOURCE/pyproject.toml" ]; then
    die "--manager-source: $MANAGER_SOURCE has no pyproject.toml"
  fi
fi
[[ "$RESTART_SEC" =~ ^[0-9]+(ms|s|min)?$ ]] || die "--restart-sec: like 1s or 100ms"
if [ "$HTTP_LISTEN_SET" = 1 ]; then
  if ! [[ "$HTTP_LISTEN" =~ ^(([0-9]{1,3}\.){3}[0-9]{1,3}|\[[0-9A-Fa-f:.]+\]|localhost):([0-9]{1,5})$ ]] \
      || [ "${BASH_REMATCH[3]}" -lt 1 ] || [ "${BASH_REMATCH[3]}" -gt 65535 ]; then
    die "--http-listen: HOST:PORT with an IP address (IPv6 as [::1]) or localhost and a port 1-65535"
  fi
fi
# Loopback only unless the operator asks for network access (--http-listen).
MANAGER_HTTP=${HTTP_LISTEN:-127.0.0.1:3081}
is_loopback() { [[ "$1" =~ ^(127\.[0-9.]+|\[::1\]|localhost):[0-9]+$ ]]; }
if [ -n "$PREFIX" ]; then
  [[ "$PREFIX" = /* ]] || die "--prefix must be an absolute path"
  PREFIX=${PREFIX%/}
fi
if [ "$RCD" = 1 ] && [ "$ROLE" != agent ]; then die "--rcd is for the agent role"; fi
if [ "$RCD" = 1 ] && [ "$USER_MODE" = 1 ]; then die "--rcd and --systemd-user exclude each other"; fi

if [ "$ROLE" = agent ]; then ROOT=$PREFIX/opt/ai-agent; else ROOT=$PREFIX/opt/backend-ai/hub; fi
ETC=$PREFIX/etc/backend-ai
STATE=$PREFIX/var/lib/backend-ai
SERVICE=ai-$ROLE
MANAGER=ai-$ROLE-manager
if [ "$USER_MODE" = 1 ]; then
  UNIT_DIR=${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user
  SYSTEMCTL=(systemctl --user)
  WANTED_BY=default.target
else
  UNIT_DIR=$PREFIX/etc/systemd/system
  SYSTEMCTL=(systemctl)
  [ -z "$PREFIX" ] || SYSTEMCTL=(systemctl "--root=$PREFIX")
  WANTED_BY=multi-user.target
fi
RC_DIR=$PREFIX/etc/rc.d
# The manager's local gRPC socket (grpc_socket): in the unit's RuntimeDirectory, or for
# rc.d under /var/run.
if [ "$RCD" = 1 ]; then
  SOCKET=$PREFIX/var/run/$MANAGER/grpc.sock
elif [ "$USER_MODE" = 1 ]; then
  SOCKET=${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/$MANAGER/grpc.sock
else
  SOCKET=/run/$MANAGER/grpc.sock
fi
GO_FILE=$PREFIX/boot/config/go
LIVE=1  # talk to a running init (not with --prefix, unless --systemd-user)
if [ -n "$PREFIX" ] && [ "$USER_MODE" = 0 ]; then LIVE=0; fi

# Replace the @KEY@ placeholders of a template.
render() {
  local backend_keys
  if [ "$RCD" = 1 ]; then
    backend_keys="rc_script = \"$RC_DIR/rc.$SERVICE\"
log_file = \"$PREFIX/var/log/$SERVICE.log\""
  elif [ "$USER_MODE" = 1 ]; then
    backend_keys="unit = \"$SERVICE.service\"
systemd_scope = \"user\""
  else
    backend_keys="unit = \"$SERVICE.service\""
  fi
  local backend=systemd
  [ "$RCD" = 0 ] || backend=rcd
  # ProtectHome and ProtectKernelTunables need mount namespaces that a user manager in a
  # container (the tests' systemd --user) cannot set up (status 226/NAMESPACE).
  local host_hardening="ProtectHome=yes
ProtectKernelTunables=yes"
  [ "$USER_MODE" = 0 ] || host_hardening="# (--systemd-user: no ProtectHome/ProtectKernelTunables)"
  BACKEND_KEYS=$backend_keys HOST_HARDENING=$host_hardening "$PYTHON" - "$1" "$ROOT" "$ETC" \
    "$STATE" "$WANTED_BY" "$RESTART_SEC" "$backend" "$SOCKET" "$MANAGER_HTTP" <<'EOF'
import os, sys
text = open(sys.argv[1]).read()
keys = dict(zip(["ROOT", "ETC", "STATE", "WANTED_BY", "RESTART_SEC", "BACKEND", "SOCKET",
                 "HTTP_LISTEN"], sys.argv[2:]))
keys["BACKEND_KEYS"] = os.environ["BACKEND_KEYS"]
keys["HOST_HARDENING"] = os.environ["HOST_HARDENING"]
for k, v in keys.items():
    text = text.replace("@" + k + "@", v)
sys.stdout.write(text)
EOF
}

# Install content (from stdin) at a path with a mode, only if it differs.
put() {
  local path=$1 mode=$2 tmp new
  tmp=$(mktemp)  # compared outside the target directory: an unchanged one keeps its mtime
  cat > "$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path" && [ "$(stat -c %a "$path")" = "$mode" ]; then
    rm -f "$tmp"
    return 1
  fi
  new=$(mktemp "$(dirname "$path")/.install.XXXXXX")
  cat "$tmp" > "$new"
  rm -f "$tmp"
  chmod "$mode" "$new"
  mv -f "$new" "$path"
  changed "$path"
}

mkdir_p() {
  local dir
  for dir in "$@"; do
    if [ ! -d "$dir" ]; then mkdir -p "$dir"; changed "$dir/"; fi
  done
}

# Unpack and check the release before anything on the host changes.
STAGE=""
VERSION=""
prepare_release() {
  [ -n "$RELEASE" ] || return 0
  [ -e "$RELEASE" ] || die "--release: $RELEASE does not exist"
  STAGE=$(mktemp -d "${TMPDIR:-/tmp}/ai-release.XXXXXX")
  trap 'rm -rf "$STAGE"' EXIT
  if [ -d "$RELEASE" ]; then
    cp -a "$RELEASE/." "$STAGE/"
  elif ! tar -xzf "$RELEASE" -C "$STAGE" --no-same-owner --no-overwrite-dir 2>/dev/null; then
    die "--release: $RELEASE is not a readable .tar.gz"
  fi
  VERSION=$(tr -d '[:space:]' < "$STAGE/VERSION" 2>/dev/null || true)
  if ! [[ "$VERSION" =~ ^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$ ]]; then
    die "--release: missing or invalid VERSION file (got '$VERSION')"
  fi
  [ -x "$STAGE/bin/$SERVICE" ] || die "--release: bin/$SERVICE is missing or not executable"
}

install_release() {
  [ -n "$RELEASE" ] || return 0
  if [ ! -d "$ROOT/releases/$VERSION" ]; then
    cp -a "$STAGE" "$ROOT/releases/.$VERSION.tmp"
    chmod 755 "$ROOT/releases/.$VERSION.tmp"
    mv -T "$ROOT/releases/.$VERSION.tmp" "$ROOT/releases/$VERSION"
    changed "$ROOT/releases/$VERSION"
  fi
  if [ ! -L "$ROOT/current" ]; then
    ln -sfn "releases/$VERSION" "$ROOT/.current.tmp"
    mv -T "$ROOT/.current.tmp" "$ROOT/current"
    changed "$ROOT/current -> releases/$VERSION"
  elif [ "$(readlink "$ROOT/current")" != "releases/$VERSION" ]; then
    echo "note: current stays $(readlink "$ROOT/current"); update through the manager"
  fi
}

install_venv() {
  [ "$VENV" = 1 ] || return 0
  local venv=$ROOT/manager/venv want
  if [ ! -x "$venv/bin/python" ]; then
    "$PYTHON" -m venv "$venv"
    changed "$venv"
  fi
  if [ -f "$MANAGER_SOURCE" ]; then  # a wheel built elsewhere (offline hosts)
    want=$(sha256sum < "$MANAGER_SOURCE" | cut -d' ' -f1)
  else
    want=$(cd "$MANAGER_SOURCE" && find pyproject.toml backendai manager -type f \
             \( -name '*.py' -o -name '*.toml' \) -print0 | sort -z | xargs -0 sha256sum \
             | sha256sum | cut -d' ' -f1)
  fi
  if [ "$(cat "$venv/.installed-from" 2>/dev/null)" != "$want" ]; then
    # shellcheck disable=SC2086  # PIP_ARGS is a list of arguments
    "$venv/bin/pip" install -q --disable-pip-version-check $PIP_ARGS "$MANAGER_SOURCE"
    echo "$want" > "$venv/.installed-from"
    changed "$venv (manager from $MANAGER_SOURCE)"
  fi
}

install_token() {
  local path=$1 src=${2:-}
  if [ ! -f "$path" ]; then
    if [ -n "$src" ]; then
      (umask 077; cat "$src" > "$path")
    else
      (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$path"; echo >> "$path")
    fi
    changed "$path"
  fi
  if [ "$(stat -c %a "$path")" != 600 ]; then chmod 600 "$path"; changed "$path mode 600"; fi
}

install_config() {
  local name=$1
  if [ ! -f "$ETC/$name.toml" ]; then
    render "$HERE/config/$name.toml.in" | put "$ETC/$name.toml" 640 || true
  fi
}

# What the manager's HTTP API listen address means, said once when the config is written
# with --http-listen, and whenever an existing config differs from what was asked or
# still serves plain HTTP beyond loopback (configs are never overwritten).
http_listen_notes() {
  local cfg=$ETC/$ROLE-manager.toml have
  have=$(sed -n 's/^http_listen = "\(.*\)"$/\1/p' "$cfg" | head -n1)
  if [ -n "$HTTP_LISTEN" ] && [ "$have" != "$HTTP_LISTEN" ]; then
    echo "note: $cfg exists and keeps http_listen = \"$have\"; edit it (then restart" \
         "$MANAGER) to listen on $HTTP_LISTEN"
    return 0
  fi
  if [ -n "$have" ] && ! is_loopback "$have" && ! grep -qx 'http_tls = true' "$cfg"; then
    echo "note: the manager's HTTP API listens on $have: anyone who can reach it with the" \
         "token in $ETC/manager.token can start, stop and update services, and the token" \
         "travels in plain HTTP. Prefer http_tls = true with a [tls] certificate, or keep" \
         "it on 127.0.0.1 and use SSH (docs/SECURITY.md)."
  fi
}

install_units() {
  local unit units=("$SERVICE" "$MANAGER") any=0
  mkdir_p "$UNIT_DIR"
  for unit in "${units[@]}"; do
    if render "$HERE/systemd/$unit.service.in" | put "$UNIT_DIR/$unit.service" 644; then
      any=1
    fi
  done
  if [ "$LIVE" = 1 ] && [ "$any" = 1 ]; then "${SYSTEMCTL[@]}" daemon-reload; fi
  for unit in "${units[@]}"; do
    if ! "${SYSTEMCTL[@]}" is-enabled --quiet "$unit.service" 2>/dev/null; then
      "${SYSTEMCTL[@]}" enable --quiet "$unit.service"
      changed "enabled $unit.service"
    fi
    if [ "$LIVE" = 1 ] && [ "$START" = 1 ] && \
        ! "${SYSTEMCTL[@]}" is-active --quiet "$unit.service"; then
      "${SYSTEMCTL[@]}" start "$unit.service"
      changed "started $unit.service"
    fi
  done
}

rc_render() {
  sed -e "s#^AI_ROOT=\${AI_ROOT:-/opt/ai-agent}#AI_ROOT=\${AI_ROOT:-$ROOT}#" \
      -e "s#^AI_ETC=\${AI_ETC:-/etc/backend-ai}#AI_ETC=\${AI_ETC:-$ETC}#" \
      -e "s#^AI_LOG=\${AI_LOG:-/var/log/#AI_LOG=\${AI_LOG:-$PREFIX/var/log/#" \
      -e "s#^AI_PIDFILE=\${AI_PIDFILE:-/var/run/#AI_PIDFILE=\${AI_PIDFILE:-$PREFIX/var/run/#" \
      "$1"
}

install_rcd() {
  local name line
  mkdir_p "$RC_DIR" "$(dirname "$GO_FILE")" "$PREFIX/var/log" "$PREFIX/var/run"
  for name in "$SERVICE" "$MANAGER"; do
    rc_render "$HERE/rc.$name" | put "$RC_DIR/rc.$name" 755 || true
  done
  [ -f "$GO_FILE" ] || { printf '#!/bin/bash\n' > "$GO_FILE"; chmod 755 "$GO_FILE"; changed "$GO_FILE"; }
  for name in "$MANAGER" "$SERVICE"; do
    line="$RC_DIR/rc.$name start"
    if ! grep -qxF "$line" "$GO_FILE"; then echo "$line" >> "$GO_FILE"; changed "$GO_FILE: $line"; fi
  done
  if [ "$LIVE" = 1 ] && [ "$START" = 1 ]; then
    for name in "$SERVICE" "$MANAGER"; do
      if ! "$RC_DIR/rc.$name" status >/dev/null; then
        "$RC_DIR/rc.$name" start; changed "started rc.$name"
      fi
    done
  fi
}

uninstall() {
  local name
  if [ "$RCD" = 1 ]; then
    for name in "$MANAGER" "$SERVICE"; do
      if [ -x "$RC_DIR/rc.$name" ]; then
        [ "$LIVE" = 0 ] || "$RC_DIR/rc.$name" stop >/dev/null || true
        rm -f "$RC_DIR/rc.$name"; changed "removed $RC_DIR/rc.$name"
      fi
      if [ -f "$GO_FILE" ] && grep -qxF "$RC_DIR/rc.$name start" "$GO_FILE"; then
        grep -vxF "$RC_DIR/rc.$name start" "$GO_FILE" > "$GO_FILE.tmp" || true
        cat "$GO_FILE.tmp" > "$GO_FILE"; rm -f "$GO_FILE.tmp"
        changed "$GO_FILE: removed rc.$name"
      fi
    done
  else
    for name in "$MANAGER" "$SERVICE"; do
      if [ -f "$UNIT_DIR/$name.service" ]; then
        if [ "$LIVE" = 1 ]; then
          "${SYSTEMCTL[@]}" disable --now --quiet "$name.service" 2>/dev/null || true
        else
          "${SYSTEMCTL[@]}" disable --quiet "$name.service" 2>/dev/null || true
        fi
        rm -f "$UNIT_DIR/$name.service"; changed "removed $name.service"
      fi
    done
    [ "$LIVE" = 0 ] || "${SYSTEMCTL[@]}" daemon-reload
  fi
  if [ -d "$ROOT" ]; then rm -rf "$ROOT"; changed "removed $ROOT"; fi
  for name in "$ROLE" "$ROLE-manager"; do
    if [ -f "$ETC/$name.toml" ]; then rm -f "$ETC/$name.toml"; changed "removed $ETC/$name.toml"; fi
  done
  # Tokens go with the last role on this host.
  if ! ls "$ETC"/*.toml >/dev/null 2>&1; then
    for name in manager.token hub.token; do
      if [ -f "$ETC/$name" ]; then rm -f "$ETC/$name"; changed "removed $ETC/$name"; fi
    done
    rmdir "$ETC" 2>/dev/null || true
  fi
  if [ "$KEEP_STATE" = 0 ]; then
    for name in "$STATE/$ROLE" "$STATE/$ROLE-manager"; do
      if [ -d "$name" ]; then rm -rf "$name"; changed "removed $name"; fi
    done
    rmdir "$STATE" 2>/dev/null || true
  fi
}

if [ "$UNINSTALL" = 1 ]; then
  uninstall
else
  prepare_release
  mkdir_p "$ROOT/releases" "$ROOT/manager" "$ETC" "$STATE/$ROLE" "$STATE/$ROLE-manager"
  for dir in "$ETC" "$STATE/$ROLE" "$STATE/$ROLE-manager"; do
    if [ "$(stat -c %a "$dir")" != 750 ]; then chmod 750 "$dir"; changed "$dir mode 750"; fi
  done
  install_release
  install_venv
  install_token "$ETC/manager.token" "$TOKEN_SRC"
  [ "$ROLE" = agent ] || install_token "$ETC/hub.token"
  install_config "$ROLE"
  install_config "$ROLE-manager"
  http_listen_notes
  if [ "$RCD" = 1 ]; then install_rcd; else install_units; fi
fi
[ "$CHANGES" -gt 0 ] || echo "unchanged"
