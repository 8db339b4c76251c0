#!/usr/bin/env bash
# npm run bench: builds the C references against the rig kernel's uAPI
# headers, then runs the benchmarks in the rig; results in bench/results/.
#   map.js  map/unmap throughput per IOMMU path, both kernels (issue: pin-core)
#   pio.js  port-I/O exit round trip of the vCPU loop (type1 kernel)
set -euo pipefail
cd "$(dirname "$0")/.."
hdr=$(bash rig/build-kernel.sh headers)
mkdir -p bench/results
cc -O2 -Wall -shared -fPIC -DMAPBENCH_LIB -I "$hdr" -o bench/results/libmapbench.so bench/ref/mapbench.c
cc -O2 -Wall -pthread -I "$hdr" -o bench/results/piobench bench/ref/piobench.c
node dist/src/cli.js rig --kernel type1 --timeout 900 --rw bench/results -- \
  node dist/bench/pio.js "$PWD/bench/results/piobench" "$PWD/bench/results/pio.json"
if [ -n "${PINION_BENCH_ONLY_PIO:-}" ]; then exit 0; fi
for k in type1 compat; do
  node dist/src/cli.js rig --kernel "$k" --memory 4096 --timeout 1800 --rw bench/results -- \
    node dist/bench/map.js "$k" "$PWD/bench/results/libmapbench.so" "$PWD/bench/results/map-$k.json"
done
