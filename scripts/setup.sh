#!/usr/bin/env bash
# Idempotent set-up for a fresh clone: Python venv from pinned constraints, noVNC (and test tools) from
# the npm lock file, and, with --test, the Debian packages the test suite drives for real.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

stamp_dir=.venv/.stamps
py=${PYTHON:-python3}

# 1. Debian packages (tests only): Chromium for browser tests, real VNC servers (Xvnc, QEMU), Redis, nginx,
#    and xterm (the shell on the Xvnc screen that the recording benchmark drives).
if [ "$want_test" = 1 ]; then
  pkgs=(chromium tigervnc-standalone-server qemu-system-x86 redis-server nginx-light xauth xterm)
  missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo_cmd=()
    [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# 2. Python virtual environment, pinned by constraints.txt.
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
mkdir -p "$stamp_dir"
base=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
# The test install is a superset of the plain one, so its stamp satisfies both.
if [ "$want_test" = 1 ]; then
  extra="[test,bench,fast]"; stamps=("$stamp_dir/pip-$base-test")
else
  extra=""; stamps=("$stamp_dir/pip-$base-test" "$stamp_dir/pip-$base")
fi
done_already=0
for s in "${stamps[@]}"; do [ -f "$s" ] && done_already=1; done
if [ "$done_already" = 0 ]; then
  echo "setup: installing Python packages (novnc-gateway$extra)"
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".$extra"
  rm -f "$stamp_dir"/pip-*
  touch "${stamps[0]}"
fi

# 3. Browser assets (noVNC) and the test OpenID provider, pinned by package-lock.json.
lock_key=$(sha256sum package-lock.json | cut -c1-16)
if [ ! -f "node_modules/.stamp-$lock_key" ]; then
  echo "setup: installing npm packages from package-lock.json"
  npm ci --no-audit --no-fund --loglevel=error
  touch "node_modules/.stamp-$lock_key"
fi

# 4. Keystone (tests only): a real OpenStack identity service, in a virtualenv of its own because its pins
#    (oslo.*, SQLAlchemy, Flask) are not the gateway's. Pinned by tests/support/keystone/constraints.txt.
if [ "$want_test" = 1 ]; then
  ks_key=$(sha256sum tests/support/keystone/constraints.txt | cut -c1-16)
  if [ ! -f ".venv/keystone/.stamp-$ks_key" ]; then
    echo "setup: installing Keystone (test identity service) into .venv/keystone"
    [ -x .venv/keystone/bin/python ] || "$py" -m venv .venv/keystone
    .venv/keystone/bin/pip install -q --disable-pip-version-check \
      -c tests/support/keystone/constraints.txt -r tests/support/keystone/constraints.txt
    rm -f .venv/keystone/.stamp-*
    touch ".venv/keystone/.stamp-$ks_key"
  fi
fi
