#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh machine, then runs the
# whole workspace's tests. Extra arguments go to `cargo test` (e.g. `tests/test.sh -p
# machine-id-auth`, `tests/test.sh -- --nocapture`). Quick when everything is installed.
#
#   tests/test.sh               # set up (once) and run every test
#   tests/test.sh --setup-only  # set up only (what .ci/run does before its other checks)
#
# Needs: OpenSSH (ssh, ssh-keygen, sshd), openssl, getfacl and PostgreSQL's server binaries
# from apt, installed here when run as root (the end-to-end suites run as root anyway: tbot
# init chowns, the full-disk tests mount a tmpfs); moto, the AWS mock, in .venv (or wherever
# $MOTO_SERVER points).
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/sh/setup.sh

ensure_apt \
  ssh=openssh-client ssh-keygen=openssh-client /usr/sbin/sshd=openssh-server \
  getfacl=acl openssl=openssl python3=python3 ss=iproute2
ensure_sshd_dirs
ensure_moto
ensure_postgres

if [ "${1:-}" = --setup-only ]; then
  echo "set up: MOTO_SERVER=$MOTO_SERVER MACHINE_ID_PG_BIN=$MACHINE_ID_PG_BIN"
  exit 0
fi
exec cargo test --workspace --locked "$@"
