// What a VM boots: the test guest's ELF payload (every vCPU enters it in
// long mode) or a Linux bzImage with an optional initrd (the boot CPU enters
// its 64-bit entry with boot_params; the others wait for Linux's INIT/SIPI,
// which KVM's in-kernel LAPIC handles). Files are read and checked here,
// before anything is opened; `plan` then says what to write and where to start.
// The kernel and initrd are checked by their headers and sizes, and read
// straight into guest RAM when the plan is loaded.
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import type { RamRange } from '../memory/layout.js';
import { BOOT, bootWrites, entryRegs, type GdtLayout } from '../vmm/boot.js';
import { KernelImageError, parseBzImage } from '../vmm/bzimage.js';
import { linuxBoot } from '../vmm/linux-boot.js';
import { unpackKernel, type Decompress } from '../vmm/vmlinux.js';
import { readSpan, type BootBytes } from '../vmm/file-span.js';
import { segmentWrites } from '../vmm/elf.js';
import { trace } from '../vmm/trace.js';
import { checkFits, parseElf, PayloadError } from '../vmm/loader.js';
import type { KvmRegs } from '../sys/kvm.js';

export type BootSource = { kind: 'payload'; path: string } | { kind: 'linux'; kernel: string; initrd?: string; decompress?: Decompress };

export interface BootPlan {
  writes: [bigint, BootBytes][];
  layout: GdtLayout;
  /** Registers for vCPU `i`, or undefined: it waits for INIT/SIPI from the boot CPU. */
  regs(i: number): Partial<KvmRegs> | undefined;
}

type ErrorClass = new (m: string) => Error;

function inputError(e: unknown, path: string, what: string, hint: string, Err: ErrorClass): Error {
  const code = (e as NodeJS.ErrnoException).code;
  return new Err(code === 'ENOENT' ? `${what} ${path} does not exist; ${hint}` : `cannot read ${what} ${path}: ${code}`);
}

function readInput(path: string, what: string, hint: string, Err: ErrorClass): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw inputError(e, path, what, hint, Err);
  }
}

/** A file's size and its first `headBytes` (fewer if it is shorter), read once it is known to be a readable regular file. */
function readHead(path: string, headBytes: number, what: string, hint: string, Err: ErrorClass): { head: Buffer; size: number } {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw inputError(e, path, what, hint, Err);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Err(`${what} ${path} is not a regular file; ${hint}`);
    const head = Buffer.alloc(Math.min(headBytes, st.size));
    let n = 0;
    while (n < head.length) {
      const got = readSync(fd, head, n, head.length - n, n);
      if (got === 0) break;
      n += got;
    }
    return { head: head.subarray(0, n), size: st.size };
  } catch (e) {
    if (e instanceof Err) throw e;
    throw inputError(e, path, what, hint, Err);
  } finally {
    closeSync(fd);
  }
}

/** Enough of a bzImage for every header field its checks read (the setup header ends before 0x300). */
const BZIMAGE_HEAD = 4096;

export function planBoot(src: BootSource, ranges: RamRange[], cmdline: string, cpus: number, ramSize: bigint, memoryArg: string): BootPlan {
  if (src.kind === 'payload') {
    const file = readInput(src.path, 'payload', 'the test guest is built by npm run build (dist/guest/pinion-guest.elf)', PayloadError);
    const payload = parseElf(file, src.path);
    checkFits(payload, ranges[0]!.size, src.path, memoryArg);
    const writes = [...bootWrites(cmdline, 'payload'), ...segmentWrites(payload)];
    return { writes, layout: 'payload', regs: (i) => entryRegs(payload.entry, i, cpus, ramSize) };
  }
  const kernel = readHead(src.kernel, BZIMAGE_HEAD, 'kernel', 'give the path of a bzImage', KernelImageError);
  const image = parseBzImage(kernel.head, src.kernel, kernel.size);
  const initrd =
    src.initrd === undefined
      ? undefined
      : {
          path: src.initrd,
          offset: 0,
          length: readHead(src.initrd, 0, 'initrd', 'give the path of an initramfs (cpio) file', KernelImageError).size,
        };
  const unpacked =
    src.decompress === 'vmm'
      ? unpackKernel(image, readSpan({ path: src.kernel, ...image.payload }), src.kernel)
      : { why: 'the default (--decompress kernel)' };
  trace('vmlinux' in unpacked ? 'kernel inflated: entering vmlinux' : `kernel decompresses itself: ${unpacked.why}`);
  const vmlinux = 'vmlinux' in unpacked ? unpacked.vmlinux : undefined;
  const plan = linuxBoot({ image, ranges, cmdline, cpus, initrd, vmlinux, kernelName: src.kernel, initrdName: src.initrd, memoryArg });
  const { entry, zeroPage } = plan;
  return {
    writes: [...bootWrites(cmdline, 'linux'), ...plan.writes],
    layout: 'linux',
    // Linux's 64-bit entry: interrupts off, RSI = boot_params.
    regs: (i) => (i === 0 ? { rip: entry, rsi: zeroPage, rflags: 2n, rsp: BOOT.payloadMin } : undefined),
  };
}
