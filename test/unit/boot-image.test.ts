// What a VM boots, planned from files: the kernel and initrd checked by
// their headers and sizes and loaded as spans of their files, read straight
// into guest RAM; what is not a readable regular file refused up front.
import t from 'tap';
import { mkdtempSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { planBoot } from '../../src/machine/boot-image.js';
import { MiB, ramRanges } from '../../src/memory/layout.js';
import { readSpanInto } from '../../src/vmm/file-span.js';
import { bzImage } from '../support/bzimage.js';

const dir = mkdtempSync(join(tmpdir(), 'pinion-boot-'));
const kernel = join(dir, 'bzImage');
const initrd = join(dir, 'initrd');
writeFileSync(kernel, bzImage({ kernelBytes: 64 * 1024 }));
writeFileSync(initrd, Buffer.alloc(300 * 1024, 0x5a));
const ranges = ramRanges(64n * MiB);
const plan = (initrdPath?: string) => planBoot({ kind: 'linux', kernel, initrd: initrdPath }, ranges, 'console=ttyS0', 1, 64n * MiB, '64M');

t.test('kernel and initrd are spans of their files, not copies in the VMM', async (t) => {
  const p = plan(initrd);
  const spans = p.writes.filter(([, b]) => !(b instanceof Uint8Array));
  t.same(
    spans.map(([, b]) => b),
    [
      { path: kernel, offset: 5 * 512, length: 64 * 1024 },
      { path: initrd, offset: 0, length: 300 * 1024 },
    ],
  );
  const into = Buffer.alloc(300 * 1024);
  readSpanInto(spans[1]![1] as { path: string; offset: number; length: number }, into);
  t.ok(
    into.every((x) => x === 0x5a),
    'a span reads back the file',
  );
  t.same(p.regs(0)?.rip, 0x1000200n, 'the entry registers need none of it');
});

t.test('what cannot be read is refused before anything is opened, in one line', async (t) => {
  t.throws(() => plan(dir), { message: `initrd ${dir} is not a regular file; give the path of an initramfs (cpio) file` });
  t.throws(() => plan(join(dir, 'none')), {
    message: `initrd ${join(dir, 'none')} does not exist; give the path of an initramfs (cpio) file`,
  });
  t.throws(() => planBoot({ kind: 'linux', kernel: dir }, ranges, '', 1, 64n * MiB, '64M'), {
    message: `kernel ${dir} is not a regular file; give the path of a bzImage`,
  });
});

t.test('a file cut short after its check fails the load with what happened', async (t) => {
  const cut = join(dir, 'cut');
  writeFileSync(cut, Buffer.alloc(8192));
  const p = planBoot({ kind: 'linux', kernel, initrd: cut }, ranges, '', 1, 64n * MiB, '64M');
  truncateSync(cut, 4096);
  const span = p.writes.find(([, b]) => !(b instanceof Uint8Array) && b.path === cut)![1] as {
    path: string;
    offset: number;
    length: number;
  };
  t.throws(() => readSpanInto(span, Buffer.alloc(span.length)), {
    message: `${cut} ended after 4096 of 8192 bytes at offset 0: it changed since it was checked`,
  });
});
