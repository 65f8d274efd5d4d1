#!/usr/bin/env bash
# Makes a local stand-in for `python:3.10-slim` when no image can be pulled (air-gapped or
# registry-less build machines, CI sandboxes): a Debian bookworm rootfs from `debootstrap`
# with this machine's own CPython 3.10 (pyenv's, or any --enable-shared build) in /usr/local,
# where the official image has it, imported into the container engine as a single-layer image.
#
#   kubeflow/image/make-base.sh [TAG]        (default localhost/taxi-python:3.10-slim; needs root)
#
# Bookworm ships Python 3.11 only, hence the copied interpreter. The rootfs also gets this
# machine's local CA certificates, so builds on it trust the same TLS roots (proxies) as the host.
set -euo pipefail
TAG=${1:-localhost/taxi-python:3.10-slim}
ENGINE=${ENGINE:-$(command -v podman || command -v docker)}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

py=""
for candidate in ${PYTHON310:-} $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10.* 2>/dev/null | sort -V | tail -n 1)/bin/python3.10 \
                 "$(command -v python3.10 || true)"; do
  if [ -x "$candidate" ] && "$candidate" -c 'import sys, ssl, zlib, ctypes, sqlite3, bz2, lzma; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
    py=$candidate; break
  fi
done
[ -n "$py" ] || { echo "make-base: no working Python 3.10 found (pyenv install 3.10, or PYTHON310=/path/python3.10)" >&2; exit 1; }
prefix=$("$py" -c 'import sys; print(sys.base_prefix)')
echo "make-base: Python $("$py" -V 2>&1 | cut -d' ' -f2) from $prefix -> $TAG"

work=$(mktemp -d /var/tmp/taxi-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
# The shared libraries CPython's extension modules link (ssl, zlib, ctypes, sqlite3, bz2, lzma,
# readline, curses, uuid, dbm) plus what a python:3.10-slim image has (ca-certificates, tzdata, netbase).
debootstrap --variant=minbase \
  --include=ca-certificates,libssl3,zlib1g,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,libreadline8,libncursesw6,libtinfo6,libuuid1,libgdbm6,libexpat1,tzdata,netbase \
  bookworm "$root" "$MIRROR" > "$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log" >&2; echo "make-base: debootstrap failed" >&2; exit 1; }

# The interpreter, without what was pip-installed into it (only pip and setuptools stay) and without its test suite.
mkdir -p "$root/usr/local"
tar -C "$prefix" --exclude='./lib/python3.10/test' --exclude='./lib/python3.10/site-packages' -cf - . | tar -C "$root/usr/local" -xf -
mkdir -p "$root/usr/local/lib/python3.10/site-packages"
for keep in pip pip-*.dist-info setuptools setuptools-*.dist-info pkg_resources _distutils_hack distutils-precedence.pth; do
  for path in "$prefix"/lib/python3.10/site-packages/$keep; do
    [ -e "$path" ] && cp -a "$path" "$root/usr/local/lib/python3.10/site-packages/"
  done
done
# The build was configured for $prefix (rpath, sysconfig); make that path resolve as well.
mkdir -p "$root$(dirname "$prefix")"
ln -sfn /usr/local "$root$prefix"
for name in python pip; do ln -sf "${name}3.10" "$root/usr/local/bin/$name" 2>/dev/null || true; done
ln -sf python3.10 "$root/usr/local/bin/python3"
# Local CA certificates of this machine (e.g. a TLS-inspecting proxy's), kept when apt in a build
# regenerates the bundle.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" /usr/sbin/update-ca-certificates >/dev/null
fi
chroot "$root" /sbin/ldconfig
chroot "$root" /usr/local/bin/python3.10 -c 'import ssl, zlib, ctypes, sqlite3, bz2, lzma, readline, venv; print("make-base: python in rootfs OK")'
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

tar -C "$root" -cf "$work/rootfs.tar" .
"$ENGINE" import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  "$work/rootfs.tar" "$TAG" >/dev/null
echo "make-base: imported $TAG"
