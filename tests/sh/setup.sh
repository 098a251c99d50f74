# Sourced by tests/test.sh and tests/quickstart.sh (not run on its own): installs what a fresh
# Debian/Ubuntu machine lacks for the tests and the guide, and does nothing (quickly) when it
# is all there. Every function is idempotent.

# ensure_apt CMD=PACKAGE ...: for each CMD (a command name, or an absolute path) that is
# missing, installs PACKAGE with apt-get when running as root; otherwise prints the one
# command to run and returns 1.
ensure_apt() {
  local pair cmd pkg missing=()
  for pair in "$@"; do
    cmd="${pair%%=*}" pkg="${pair#*=}"
    case "$cmd" in
      /*) [ -x "$cmd" ] && continue ;;
      *) command -v "$cmd" >/dev/null 2>&1 && continue ;;
    esac
    case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
  done
  apt_install "${missing[@]}"
}

# apt_install PACKAGE ...: installs the packages with apt-get when running as root;
# otherwise prints the one command to run and returns 1. Nothing to do with no packages.
apt_install() {
  [ $# -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing: $*. Install them first (as root), then run this again:" >&2
    echo "  sudo apt-get install -y --no-install-recommends $*" >&2
    return 1
  fi
  printf '\n==> installing %s (apt-get)\n' "$*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_sshd_dirs: sshd refuses to start without its privilege-separation directory.
ensure_sshd_dirs() {
  [ -d /run/sshd ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "sshd needs /run/sshd: sudo mkdir -p /run/sshd" >&2
    return 1
  fi
  mkdir -p /run/sshd
}

# ensure_moto: exports MOTO_SERVER, the AWS mock the IAM join suites run against. Keeps an
# executable $MOTO_SERVER already set; else installs moto[server] into .venv in the current
# directory (about a minute, once per checkout).
ensure_moto() {
  if [ -n "${MOTO_SERVER:-}" ] && [ -x "$MOTO_SERVER" ]; then
    export MOTO_SERVER
    return 0
  fi
  if [ ! -x .venv/bin/moto_server ]; then
    # Debian's python3 ships venv/ensurepip separately (python3-venv); pyenv's has them.
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
      ensure_apt_packages python3 python3-venv || return 1
    fi
    printf '\n==> installing moto[server] into %s/.venv (about a minute, once)\n' "$PWD"
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check 'moto[server]'
  fi
  MOTO_SERVER="$PWD/.venv/bin/moto_server"
  export MOTO_SERVER
}

# ensure_apt_packages PACKAGE ...: installs packages that have no command to look for.
ensure_apt_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  apt_install "${missing[@]}"
}

# ensure_postgres: exports MACHINE_ID_PG_BIN, the directory of PostgreSQL's server binaries
# (initdb, postgres, pg_ctl, pg_isready, psql: /usr/lib/postgresql/<version>/bin, not on
# PATH), for the store's PostgreSQL tests, which start their own throwaway server. Installs
# the `postgresql` package when none is there, without creating or starting Debian's own
# cluster (the tests never use it).
ensure_postgres() {
  local bin
  if [ -n "${MACHINE_ID_PG_BIN:-}" ] && [ -x "$MACHINE_ID_PG_BIN/initdb" ]; then
    export MACHINE_ID_PG_BIN
    return 0
  fi
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    if [ "$(id -u)" -eq 0 ] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
      mkdir -p /etc/postgresql-common
      echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf
    fi
    apt_install postgresql || return 1
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  fi
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "postgresql is installed but no initdb under /usr/lib/postgresql/*/bin" >&2
    return 1
  fi
  MACHINE_ID_PG_BIN="$bin"
  export MACHINE_ID_PG_BIN
}
