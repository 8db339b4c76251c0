// Part of a file the VMM loads into guest RAM by reading it there directly:
// a kernel or initrd is then never also a buffer of the VMM's own, which
// would stay resident (10 MiB and more) until V8 next collects garbage.
import { closeSync, openSync, readSync } from 'node:fs';

export interface FileSpan {
  path: string;
  offset: number;
  length: number;
}

/** What a boot write puts in guest RAM: bytes the VMM built, or a span of a file. */
export type BootBytes = Uint8Array | FileSpan;

/** Fills `dst` (dst.length bytes) from the span; a file cut short since it was checked is an error. */
export function readSpanInto(s: FileSpan, dst: Uint8Array): void {
  const fd = openSync(s.path, 'r');
  try {
    let done = 0;
    while (done < dst.length) {
      const n = readSync(fd, dst, done, dst.length - done, s.offset + done);
      if (n === 0)
        throw new Error(`${s.path} ended after ${done} of ${dst.length} bytes at offset ${s.offset}: it changed since it was checked`);
      done += n;
    }
  } finally {
    closeSync(fd);
  }
}

export function readSpan(s: FileSpan): Buffer {
  const b = Buffer.allocUnsafe(s.length);
  readSpanInto(s, b);
  return b;
}
