#!/usr/bin/env bash
# Prepares the Python client that tests/python/consumer.py is: a virtual
# environment in .local/python with the pinned packages of
# tests/python/requirements.txt (nats-py, protobuf, grpcio-tools), and the
# protobuf classes of every .proto file under proto/, generated into
# .local/python/gen exactly as another team would generate them.
#
# Running it again is quick: it does nothing when the requirements and the
# .proto files have not changed since the last run (stamps in .local/python).
#
# The environment, in order of preference:
#   1. `python3 -m venv` (with pip);
#   2. the same after installing Debian's python3-venv (apt-get, as root or
#      through sudo), when the venv module or ensurepip is missing;
#   3. `pip install --target .local/python/site` with the system's pip, and
#      .local/python/bin/python a wrapper that puts it on PYTHONPATH.
# Either way `.local/python/bin/python` is the interpreter to use.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/tests/python"
venv="$root/.local/python"
gen="$venv/gen"
requirements="$here/requirements.txt"
python="${PYTHON:-python3}"

log() { printf '[python] %s\n' "$*" >&2; }
die() { printf '[python] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@" || die "need root to run: $*"
  else die "need root to run: $* (no sudo)"; fi
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  log "installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

hash_of() { cat "$@" | sha256sum | cut -c1-64; }

command -v "$python" >/dev/null 2>&1 || apt_install python3 || true
command -v "$python" >/dev/null 2>&1 || die "$python is missing: install Python 3.8 or newer"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 8))' \
  || die "$("$python" --version 2>&1) is too old: nats-py needs Python 3.8 or newer"

mkdir -p "$venv"
# One set-up at a time (two test runs may start together).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$venv/.setup.lock"
  flock 9
fi

protos=()
while IFS= read -r file; do protos+=("$file"); done < <(cd "$root/proto" && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
[ "${#protos[@]}" -gt 0 ] || die "no .proto files under $root/proto"

deps_stamp="$(printf '%s\n%s\n' "$(hash_of "$requirements")" "$("$python" --version 2>&1)")"
gen_stamp="$(printf '%s\n%s\n' "$deps_stamp" "$(cd "$root/proto" && hash_of "${protos[@]}")")"

if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.deps-stamp" 2>/dev/null)" = "$deps_stamp" ] \
   && [ "$(cat "$gen/.stamp" 2>/dev/null)" = "$gen_stamp" ]; then
  log "up to date: $venv"
  exit 0
fi

# ----------------------------------------------------------- environment --

make_venv() {
  "$python" -m venv "$venv" >/dev/null 2>&1 && "$venv/bin/python" -m pip --version >/dev/null 2>&1
}

make_target() {
  local site="$venv/site"
  if ! "$python" -m pip --version >/dev/null 2>&1; then
    apt_install python3-pip || true
  fi
  "$python" -m pip --version >/dev/null 2>&1 || die "neither venv nor pip works for $python; install python3-venv or python3-pip"
  rm -rf "$site" "$venv/bin" "$venv/lib" "$venv/lib64" "$venv/include" "$venv/pyvenv.cfg"
  log "installing into $site (pip --target)"
  PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --disable-pip-version-check --no-input -q \
    --target "$site" -r "$requirements"
  mkdir -p "$venv/bin"
  local interpreter; interpreter="$(command -v "$python")"
  cat > "$venv/bin/python" <<WRAPPER
#!/bin/sh
# Written by tests/python/setup.sh: $interpreter with the packages of $site.
PYTHONPATH="$site\${PYTHONPATH:+:\$PYTHONPATH}" exec "$interpreter" "\$@"
WRAPPER
  chmod +x "$venv/bin/python"
}

if [ "$(cat "$venv/.deps-stamp" 2>/dev/null)" != "$deps_stamp" ] || [ ! -x "$venv/bin/python" ]; then
  rm -f "$venv/.deps-stamp"
  if [ -d "$venv/site" ]; then
    make_target
  else
    if ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; }; then
      rm -rf "$venv/bin" "$venv/lib" "$venv/lib64" "$venv/include" "$venv/pyvenv.cfg"
      log "creating a virtual environment in $venv"
      if ! make_venv; then
        rm -rf "$venv/bin" "$venv/lib" "$venv/lib64" "$venv/include" "$venv/pyvenv.cfg"
        minor="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        # Debian's python3-venv is python$minor-venv for the default Python.
        apt_install "python$minor-venv" || true
        if ! make_venv; then
          rm -rf "$venv/bin" "$venv/lib" "$venv/lib64" "$venv/include" "$venv/pyvenv.cfg"
          log "the venv module does not work here; falling back to pip --target"
        fi
      fi
    fi
    if [ -x "$venv/bin/python" ] && [ ! -d "$venv/site" ]; then
      log "installing $(grep -Ev '^\s*(#|$)' "$requirements" | tr '\n' ' ')"
      "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$requirements"
    else
      make_target
    fi
  fi
  printf '%s' "$deps_stamp" > "$venv/.deps-stamp"
fi

# ------------------------------------------------------- generated classes --

log "generating Python classes from proto/ into $gen"
tmp="$venv/gen.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
# grpc_tools.protoc adds its own include directory with the well-known types
# (google/protobuf/*.proto), so `-I proto` is all the project's files need.
(cd "$root/proto" && "$venv/bin/python" -m grpc_tools.protoc -I . --python_out="$tmp" "${protos[@]}")
# The classes load, with the runtime installed above.
PYTHONPATH="$tmp" "$venv/bin/python" - <<'CHECK'
import nats
from google.protobuf import json_format
from callflow.events.v1 import events_pb2
assert events_pb2.Event.DESCRIPTOR.full_name == "callflow.events.v1.Event"
CHECK
printf '%s' "$gen_stamp" > "$tmp/.stamp"
rm -rf "$gen"
mv "$tmp" "$gen"
log "ready: $venv/bin/python tests/python/consumer.py --help"
