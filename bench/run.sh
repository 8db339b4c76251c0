#!/usr/bin/env bash
# npm run bench: builds the C reference against the rig kernel's uAPI headers,
# then runs bench/map.js in the rig on both kernels; results in bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
hdr=$(bash rig/build-kernel.sh headers)
mkdir -p bench/results
cc -O2 -Wall -I "$hdr" -o bench/results/mapbench bench/ref/mapbench.c
for k in type1 compat; do
  node dist/src/cli.js rig --kernel "$k" --memory 4096 --timeout 1800 --rw bench/results -- \
    node dist/bench/map.js "$k" "$PWD/bench/results/mapbench" "$PWD/bench/results/map-$k.json"
done
