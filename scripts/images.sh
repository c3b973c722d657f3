#!/usr/bin/env bash
# Builds the container images: one per function (every functions/<folder>/ with a __main__.py;
# the image is rgw-inference/<folder with '_' as '-'>, the name of its Knative Service), then
# source, results (the results service) and modelserver (default: all; `scripts/images.sh --list` prints the names).
#
#   scripts/images.sh [name ...]
#
# Environment:
#   REGISTRY   prefix for the image names, e.g. ghcr.io/me (default: none -> rgw-inference/<name>)
#   TAG        image tag (default: the one knative/components/images gives every build)
# The manifests name every image in one place, knative/components/images:
#   scripts/images.sh --registry | --tag   print the prefix (empty: none) and tag it names
#   scripts/images.sh --set-names          write REGISTRY and TAG there (unset: kept), for every image
#   BASE       base image (default: the Dockerfiles' python:3.11-slim-bookworm)
#   ENGINE     podman or docker (default: podman if installed, else docker)
#   OCI_LOCAL_STORE=1   podman keeps all its state in .cache/oci (CI; scripts/oci-env.sh)
#   OFFLINE=0  let pip inside the build reach PyPI instead of the host-downloaded wheels
# Every function, the source and the results service are built by functions/Dockerfile, the model server by its own.
# An image's pins are functions/requirements.txt (the runtime) plus <dir>/requirements.txt and,
# if present, <dir>/requirements-nodeps.txt (installed without dependencies). Wheels are
# downloaded on the host into .cache/wheels/<dir> (the host's pip has working TLS), and the build
# runs with --network=none from them.
set -euo pipefail
cd "$(dirname "$0")/.."
functions=()
for main in functions/*/__main__.py; do
  [[ -e $main ]] || continue
  folder=$(basename "$(dirname "$main")")
  functions+=("${folder//_/-}")
done
ALL=("${functions[@]}" source results modelserver)
IMAGES_COMPONENT=knative/components/images/kustomization.yaml
component_registry() {
  local ref
  ref=$(sed -n 's/^ *newName: *//p' "$IMAGES_COMPONENT" | head -1)
  ref=${ref%rgw-inference/*}
  echo "${ref%/}"
}
component_tag() {
  sed -n 's/^ *newTag: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$IMAGES_COMPONENT" | head -1
}
case ${1:-} in
  --list) echo "${ALL[@]}"; exit 0 ;;
  --registry) component_registry; exit 0 ;;
  --tag) component_tag; exit 0 ;;
  --set-names)
    registry=${REGISTRY-$(component_registry)}
    tag=${TAG:-$(component_tag)}
    {
      sed '/^images:/,$d' "$IMAGES_COMPONENT"
      echo "images:"
      for name in "${ALL[@]}"; do
        printf '  - name: rgw-inference/%s\n    newName: %srgw-inference/%s\n    newTag: "%s"\n' \
          "$name" "${registry:+$registry/}" "$name" "$tag"
      done
    } >"$IMAGES_COMPONENT.new"
    mv "$IMAGES_COMPONENT.new" "$IMAGES_COMPONENT"
    echo "every build now names ${registry:+$registry/}rgw-inference/<name>:$tag ($IMAGES_COMPONENT)" >&2
    exit 0 ;;
esac
names=("$@")
[[ ${#names[@]} -eq 0 ]] && names=("${ALL[@]}")
ENGINE="${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}"
TAG="${TAG:-$(component_tag)}"
PIP="${PIP:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3) -m pip}"
if [[ $ENGINE == podman && ${OCI_LOCAL_STORE:-0} == 1 ]]; then
  source scripts/oci-env.sh
fi
for name in "${names[@]}"; do
  case $name in
    source) dir=source dockerfile=functions/Dockerfile
      build_args=(--build-arg APP=source --build-arg MODULE=source) ;;
    results) dir=results dockerfile=functions/Dockerfile
      build_args=(--build-arg APP=results --build-arg MODULE=results) ;;
    modelserver) dir=modelserver dockerfile=modelserver/Dockerfile build_args=() ;;
    *) dir=functions/${name//-/_} dockerfile=functions/Dockerfile
      build_args=(--build-arg "FUNCTION=${name//-/_}")
      [[ -f $dir/__main__.py ]] || { echo "unknown image '$name' (one of: ${ALL[*]})" >&2; exit 2; } ;;
  esac
  wheels=".cache/wheels/$dir"
  mkdir -p "$wheels"
  if [[ ${OFFLINE:-1} == 1 ]]; then
    $PIP download --quiet --disable-pip-version-check --only-binary=:all: -d "$wheels" \
      -r functions/requirements.txt -r "$dir/requirements.txt"
    # Their dependencies would pull torch: fetched on their own, installed with --no-deps.
    if [[ -f $dir/requirements-nodeps.txt ]]; then
      $PIP download --quiet --disable-pip-version-check --no-deps -d "$wheels" \
        -r "$dir/requirements-nodeps.txt"
    fi
    build_args+=(--network=none)
  else
    rm -f "$wheels"/*.whl
  fi
  [[ -n ${BASE:-} ]] && build_args+=(--build-arg "BASE=$BASE")
  image="${REGISTRY:+$REGISTRY/}rgw-inference/$name:$TAG"
  echo "building $image" >&2
  "$ENGINE" build "${build_args[@]}" -f "$dockerfile" -t "$image" .
done
