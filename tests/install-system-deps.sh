#!/usr/bin/env bash
# System packages the tests drive for real: Debian's chromium (the report is checked in a real
# browser) and PostgreSQL (many workers on one study). Installed with apt only when missing.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
