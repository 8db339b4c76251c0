#!/usr/bin/env bash
# Builds the freestanding test guest (guest/) with the host's gcc into
# dist/guest/pinion-guest.elf, an ELF64 executable loaded at physical 1 MiB
# (see guest/guest.ld and the boot contract in guest/start.S).
# Does nothing when the ELF is newer than every source; silent on success.
set -euo pipefail
cd "$(dirname "$0")/.."
out=dist/guest/pinion-guest.elf
srcs=(guest/start.S guest/*.c)

if [[ -f $out && -z $(find guest scripts/build-guest.sh -newer "$out" -print -quit) ]]; then
	exit 0
fi
mkdir -p dist/guest
# -mgeneral-regs-only: no SSE, so no FPU state to care about; -mno-red-zone:
# nothing may rely on memory below RSP. No unwind tables: nothing unwinds.
gcc -ffreestanding -nostdlib -static -fno-pie -no-pie -mno-red-zone \
	-fno-stack-protector -mgeneral-regs-only -fno-asynchronous-unwind-tables \
	-fcf-protection=none -O2 -Wall -Wextra -Werror \
	-Wl,-T,guest/guest.ld -Wl,--build-id=none -Wl,-z,max-page-size=4096 \
	-o "$out.tmp" "${srcs[@]}"
mv "$out.tmp" "$out"
