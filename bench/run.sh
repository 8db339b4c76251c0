#!/usr/bin/env bash
# npm run bench: builds the C references against the rig kernel's uAPI
# headers, then runs the benchmarks in the rig; results in bench/results/,
# all in one schema (bench/method.ts), and ends with one summary table of
# every cell (bench/report.ts).
#   map.js  map/unmap cost per IOMMU path, both kernels (map-<kernel>.json)
#   crossing.js  per-op cost of TS -> pin-core above the ioctl: 4 KiB pairs one
#           by one and in batches, and DmaMapper.sync of a guest memory map,
#           against C, both paths, both kernels (crossing-<kernel>.json)
#   pio.js  port-I/O and MMIO exit round trip of the vCPU loop (type1 kernel; pio.json)
#   linux-guest.js  a Linux guest with an igb VF under Pinion and under QEMU,
#           side by side, both paths, both kernels (linux-guest.json)
#   first-instruction.js  start to the guest's first line with a VF assigned,
#           64 MiB and 1 GiB, against QEMU -mem-prealloc (first-instruction.json)
#   nic.js  UDP echo round trip through the VF, Pinion's and QEMU's guests at
#           once (nic.json)
#   remap   memory changes through the control API under a frame stream
#           (test/l1/remap-traffic.js), each path and accounting mode: a record
#           per change, not a ratio (remap.json, bench/remap-record.ts)
# PINION_BENCH=pio,map,crossing,linux-guest,first-instruction,nic,remap picks some (default: all);
# PINION_BENCH_KERNELS="type1" limits the rig kernels (default: type1 compat).
set -euo pipefail
cd "$(dirname "$0")/.."
hdr=$(bash rig/build-kernel.sh headers)
mkdir -p bench/results
cc -O2 -Wall -shared -fPIC -DMAPBENCH_LIB -I "$hdr" -o bench/results/libmapbench.so bench/ref/mapbench.c
cc -O2 -Wall -shared -fPIC -DPIOBENCH_LIB -I "$hdr" -o bench/results/libpiobench.so bench/ref/piobench.c
want() { [[ ",${PINION_BENCH:-pio,map,crossing,linux-guest,first-instruction,nic,remap}," == *",$1,"* ]]; }
# Provenance, read here: L1 sees its own emulated CPUs, and PINION_* reaches the command in L1.
export PINION_COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!bench/results' || echo -dirty)"
PINION_HOST_CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
PINION_HOST_CPUS=$(grep -c '^processor' /proc/cpuinfo)
export PINION_HOST_CPU PINION_HOST_CPUS
image() { read -r _ bz rd < <(node dist/rig/guest-image.js "$1"); export PINION_RIG_KERNEL_ID; PINION_RIG_KERNEL_ID=$(basename "$(dirname "$bz")"); }
if want pio; then
  image type1
  node dist/bundle/pinion.js rig --kernel type1 --timeout 900 --rw bench/results -- \
    node dist/bench/pio.js "$PWD/bench/results/libpiobench.so" "$PWD/bench/results/pio.json"
fi
for k in ${PINION_BENCH_KERNELS:-type1 compat}; do
  image "$k"
  if want map; then
    node dist/bundle/pinion.js rig --kernel "$k" --memory 4G --timeout 2400 --rw bench/results -- \
      node dist/bench/map.js "$k" "$PWD/bench/results/libmapbench.so" "$PWD/bench/results/map-$k.json"
  fi
  if want crossing; then
    # About 10 minutes a kernel (crossing.ts's caps); twice that before the rig gives up.
    node dist/bundle/pinion.js rig --kernel "$k" --memory 4G --timeout 1200 --rw bench/results -- \
      node dist/bench/crossing.js "$k" "$PWD/bench/results/libmapbench.so" "$PWD/bench/results/crossing-$k.json"
  fi
  if want linux-guest; then
    node dist/bundle/pinion.js rig --kernel "$k" --timeout 3000 --rw bench/results -- \
      node dist/bench/linux-guest.js "$k" "$bz" "$rd" "$PWD/bench/results/linux-guest.json"
  fi
  if want remap; then
    # The traffic scenario of test/l1/remap-traffic.ts on each path and accounting mode, a minute of frames each.
    node dist/bundle/pinion.js rig --kernel "$k" --timeout 1500 --rw bench/results -- \
      sh -c "for p in 'legacy user' 'iommufd user' 'iommufd opener'; do PINION_REMAP_RECORD='$PWD/bench/results/remap.json' PINION_RIG_KERNEL=$k node dist/test/l1/remap-traffic.js \$p >/dev/null || exit 1; done"
  fi
  if want first-instruction; then
    node dist/bundle/pinion.js rig --kernel "$k" --memory 3G --timeout 1500 --rw bench/results -- \
      node dist/bench/first-instruction.js "$k" "$PWD/bench/results/first-instruction.json"
  fi
  if want nic; then
    for iommu in iommufd legacy; do
      node dist/bundle/pinion.js rig --kernel "$k" --timeout 1200 --rw bench/results -- \
        node dist/bench/nic.js "$k" "$bz" "$rd" "$PWD/bench/results/nic.json" "$iommu"
    done
  fi
done
node dist/bench/report.js bench/results
