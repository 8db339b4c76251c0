// What a VM boots: the test guest's ELF payload (every vCPU enters it in
// long mode) or a Linux bzImage with an optional initrd (the boot CPU enters
// its 64-bit entry with boot_params; the others wait for Linux's INIT/SIPI,
// which KVM's in-kernel LAPIC handles). Files are read and checked here,
// before anything is opened; `plan` then says what to write and where to start.
import { readFileSync } from 'node:fs';
import type { RamRange } from '../memory/layout.js';
import { BOOT, bootWrites, entryRegs, type GdtLayout } from '../vmm/boot.js';
import { KernelImageError, parseBzImage } from '../vmm/bzimage.js';
import { linuxBoot } from '../vmm/linux-boot.js';
import { unpackKernel, type Decompress } from '../vmm/vmlinux.js';
import { segmentWrites } from '../vmm/elf.js';
import { trace } from '../vmm/trace.js';
import { checkFits, parseElf, PayloadError } from '../vmm/loader.js';
import type { KvmRegs } from '../sys/kvm.js';

export type BootSource = { kind: 'payload'; path: string } | { kind: 'linux'; kernel: string; initrd?: string; decompress?: Decompress };

export interface BootPlan {
  writes: [bigint, Uint8Array][];
  layout: GdtLayout;
  /** Registers for vCPU `i`, or undefined: it waits for INIT/SIPI from the boot CPU. */
  regs(i: number): Partial<KvmRegs> | undefined;
}

function readInput(path: string, what: string, hint: string, Err: new (m: string) => Error): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Err(code === 'ENOENT' ? `${what} ${path} does not exist; ${hint}` : `cannot read ${what} ${path}: ${code}`);
  }
}

export function planBoot(src: BootSource, ranges: RamRange[], cmdline: string, cpus: number, ramSize: bigint, memoryArg: string): BootPlan {
  if (src.kind === 'payload') {
    const file = readInput(src.path, 'payload', 'the test guest is built by npm run build (dist/guest/pinion-guest.elf)', PayloadError);
    const payload = parseElf(file, src.path);
    checkFits(payload, ranges[0]!.size, src.path, memoryArg);
    const writes = [...bootWrites(cmdline, 'payload'), ...segmentWrites(payload)];
    return { writes, layout: 'payload', regs: (i) => entryRegs(payload.entry, i, cpus, ramSize) };
  }
  const image = parseBzImage(readInput(src.kernel, 'kernel', 'give the path of a bzImage', KernelImageError), src.kernel);
  const initrd =
    src.initrd === undefined ? undefined : readInput(src.initrd, 'initrd', 'give the path of an initramfs (cpio) file', KernelImageError);
  const unpacked = src.decompress === 'vmm' ? unpackKernel(image, src.kernel) : { why: 'the default (--decompress kernel)' };
  trace('vmlinux' in unpacked ? 'kernel inflated: entering vmlinux' : `kernel decompresses itself: ${unpacked.why}`);
  const vmlinux = 'vmlinux' in unpacked ? unpacked.vmlinux : undefined;
  const plan = linuxBoot({ image, ranges, cmdline, cpus, initrd, vmlinux, kernelName: src.kernel, initrdName: src.initrd, memoryArg });
  return {
    writes: [...bootWrites(cmdline, 'linux'), ...plan.writes],
    layout: 'linux',
    // Linux's 64-bit entry: interrupts off, RSI = boot_params.
    regs: (i) => (i === 0 ? { rip: plan.entry, rsi: plan.zeroPage, rflags: 2n, rsp: BOOT.payloadMin } : undefined),
  };
}
