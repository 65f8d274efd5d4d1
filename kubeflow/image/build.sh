#!/usr/bin/env bash
# Builds kubeflow/Dockerfile with whichever container engine runs here (podman, else docker).
#   kubeflow/image/build.sh IMAGE [BASE_IMAGE]        (from anywhere; `make image` calls it)
# The pip cache is a build cache mount (RUN --mount=type=cache) and the dependency layer is cached,
# so a rebuild after a code change reinstalls only the project.
set -euo pipefail
IMAGE=${1:?usage: build.sh IMAGE [BASE_IMAGE]}
BASE=${2:-python:3.10-slim}
repo=$(cd "$(dirname "$0")/../.." && pwd)
engine=${ENGINE:-}
if [ -z "$engine" ]; then
  if command -v podman >/dev/null && podman info >/dev/null 2>&1; then engine=podman
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker
  else echo "error: no container engine runs here: install podman (apt-get install podman runc) or docker" >&2; exit 1
  fi
fi
if ! "$engine" image inspect "$BASE" >/dev/null 2>&1 && ! "$engine" pull -q "$BASE" >/dev/null 2>&1; then
  echo "error: base image $BASE is neither local nor pullable; make one with 'make base-image' and pass" \
       "BASE_IMAGE=localhost/taxi-python:3.10-slim" >&2
  exit 1
fi
echo "building $IMAGE on $BASE with $engine"
extra=()
[ "$engine" = podman ] && extra+=(--layers --pull=never)
exec "$engine" build "${extra[@]}" --network host -f "$repo/kubeflow/Dockerfile" \
  --build-arg "BASE_IMAGE=$BASE" -t "$IMAGE" "$repo"
