#!/usr/bin/env bash
# Installs the Debian packages the test suite runs against (real registries and clients), only when
# something is missing: `apt-get update` once, then one `apt-get install`. Idempotent; needs root to install.
# `--bench` adds what the benchmark (bench/run.sh) needs besides.
set -euo pipefail

# The one list of packages the suite needs; add containerd, podman, docker.io, redis-server, nginx… here.
PACKAGES=(
  docker-registry
  skopeo
  apache2-utils
  openssl
  ca-certificates
  # Real clients (test/real-clients.test.ts): a private containerd (runc is its runtime), podman (brings
  # conmon) and dockerd on that containerd (docker.io brings tini and the docker CLI). As root with vfs
  # storage, no networking and no containers run, nothing more is needed: no uidmap, fuse-overlayfs,
  # slirp4netns, and no iptables rules.
  containerd
  runc
  podman
  docker.io
  # Another push client (test/push-clients.test.ts).
  buildah
  # The X-Accel-Redirect offload in front (test/nginx-offload.test.ts, docs/nginx.md).
  nginx
  # Traces the fs store's system calls: commits fsync their folder (test/durability.test.ts).
  strace
  # Builds the OCI conformance suite from the team's kit (test/oci-conformance.test.ts).
  golang-go
  # The postgres MetadataStore (src/meta/postgres-store.test.ts, test/postgres-metadata.test.ts), started by
  # ../shared/testing/pg-start.sh from /usr/lib/postgresql/15/bin.
  postgresql-15
  # S3 for the s3 ObjectStore (src/store/s3-store.test.ts, test/s3-store.test.ts): OpenStack Swift with its
  # s3api middleware, started per test by ../shared/testing/swift-start.sh (memcached for its token cache).
  swift
  swift-proxy
  swift-object
  swift-container
  swift-account
  python3-swift
  memcached
)

# Commands that must exist afterwards (checked before and after installing).
COMMANDS=(
  docker-registry
  skopeo
  htpasswd
  openssl
  containerd
  ctr
  runc
  podman
  dockerd
  docker
  buildah
  nginx
  strace
  go
  swift-proxy-server
  swift-object-server
  swift-container-server
  swift-account-server
  memcached
)

# Programs that are not on PATH (Debian keeps PostgreSQL's server programs under its versioned directory).
FILES=(
  /usr/lib/postgresql/15/bin/pg_ctl
  /usr/lib/postgresql/15/bin/initdb
)

if [ "${1:-}" = "--bench" ]; then
  # wrk for requests/s and latency; curl for throughput and time to first byte.
  PACKAGES+=(wrk curl)
  COMMANDS+=(wrk curl)
fi

package_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing_packages=()
if command -v dpkg-query >/dev/null 2>&1; then
  for package in "${PACKAGES[@]}"; do
    package_installed "$package" || missing_packages+=("$package")
  done
fi
missing_commands=()
for cmd in "${COMMANDS[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing_commands+=("$cmd")
done
for file in "${FILES[@]}"; do
  [ -x "$file" ] || missing_commands+=("$file")
done

if [ "${#missing_packages[@]}" -eq 0 ] && [ "${#missing_commands[@]}" -eq 0 ]; then
  echo "install-deps: all present (${PACKAGES[*]})"
  exit 0
fi

echo "install-deps: missing packages: ${missing_packages[*]:-none}; missing commands: ${missing_commands[*]:-none}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: FAILED: installing needs root; run as root or install: ${PACKAGES[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: FAILED: no apt-get here; install by hand: ${PACKAGES[*]}" >&2
  exit 1
fi

to_install=("${missing_packages[@]}")
# A command missing although dpkg says its package is installed (or no dpkg-query): install the whole list.
if [ "${#to_install[@]}" -eq 0 ]; then to_install=("${PACKAGES[@]}"); fi

echo "install-deps: apt-get update"
if ! apt-get update; then
  echo "install-deps: FAILED: apt-get update" >&2
  exit 1
fi
echo "install-deps: installing ${to_install[*]}"
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${to_install[@]}"; then
  echo "install-deps: FAILED: apt-get install ${to_install[*]}" >&2
  exit 1
fi

still_missing=()
for cmd in "${COMMANDS[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || still_missing+=("$cmd")
done
for file in "${FILES[@]}"; do
  [ -x "$file" ] || still_missing+=("$file")
done
if [ "${#still_missing[@]}" -ne 0 ]; then
  echo "install-deps: FAILED: still missing after install: ${still_missing[*]}" >&2
  exit 1
fi
echo "install-deps: installed ${to_install[*]}"
