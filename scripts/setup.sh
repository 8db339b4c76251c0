#!/usr/bin/env bash
# Brings a fresh checkout to a runnable state, and is cheap when nothing
# changed: host packages (QEMU, kernel build tools), npm packages, the
# pin-core addon, the TypeScript build, the test guest, both rig kernels and
# the Linux guest image (cached).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
say() { echo "setup: $*" >&2; }

bash rig/install-host.sh
if ! command -v cargo >/dev/null; then
  say "installing cargo from Debian"
  # rustfmt for the lint; clippy is optional there (the lint skips it when missing).
  apt-get install -y -qq cargo rustfmt >/dev/null
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  # tap compiles its plugin set at install; package.json drops its TypeScript
  # loader (tests run from tsc's output), which takes a rebuild to apply.
  npx tap build >/dev/null
fi
npm run --silent build:native >/dev/null 2>&1 || { say "pin-core build failed:"; npm run build:native; exit 1; }
npx tsc -p tsconfig.json || { say "TypeScript build failed (errors above)"; exit 1; }
node scripts/bundle.mjs || { say "bundling the CLI failed (errors above)"; exit 1; }
bash scripts/build-guest.sh || { say "test guest build failed (errors above)"; exit 1; }
if [ -z "${PINION_SKIP_KERNELS:-}" ]; then
  for k in type1 compat; do bash rig/build-kernel.sh "$k" >/dev/null; done
  node dist/rig/guest-image.js >/dev/null || { say "Linux guest image build failed (errors above)"; exit 1; }
fi
