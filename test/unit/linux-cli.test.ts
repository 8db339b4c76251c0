// `pinion run --kernel` with bad input: one line that says what is wrong and
// what to do, exit 1, before anything is opened (no KVM needed to see it).
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bzImage } from '../support/bzimage.js';
import { runCli } from '../support/rig.js';

const dir = mkdtempSync(join(tmpdir(), 'pinion-kernel-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function bz(kernelBytes: number, cut?: number): string {
  const p = join(dir, `bz-${kernelBytes}-${cut ?? 0}`);
  writeFileSync(p, bzImage({ kernelBytes, cut, initSize: 0x800000 }));
  return p;
}

const oneLine = (t: Test, r: { code: number | null; stderr: string }, re: RegExp): void => {
  t.equal(r.code, 1);
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  t.match(r.stderr, re);
};

t.test('a file that is not a bzImage', async (t) => {
  oneLine(
    t,
    await runCli(['run', '--kernel', 'package.json']),
    /^pinion: package\.json is not a Linux bzImage \(no "HdrS" setup header at 0x202\)/,
  );
});

t.test('a truncated bzImage', async (t) => {
  oneLine(
    t,
    await runCli(['run', '--kernel', bz(65536, 20000)]),
    /is truncated: its header promises 68096 bytes, the file has 20000; copy the bzImage again/,
  );
});

t.test('an initrd larger than guest RAM', async (t) => {
  const big = join(dir, 'big.cpio');
  writeFileSync(big, Buffer.alloc(80 * 1048576));
  oneLine(
    t,
    await runCli(['run', '--kernel', bz(4096), '--initrd', big, '--memory', '64M']),
    /^pinion: initrd \S+big\.cpio \(80 MiB\) does not fit in guest RAM: it must lie between the kernel's end 0x1800000 and 0x4000000 \(--memory 64M\); raise --memory to at least 105 MiB$/m,
  );
});

t.test('flags that do not go together', async (t) => {
  const r = await runCli(['run', '--kernel', bz(4096), '--payload', 'x.elf']);
  t.equal(r.code, 2);
  t.match(r.stderr, /--payload and --kernel both given; boot one/);
  const c = await runCli(['run', '--kernel', bz(4096), '--cmdline', 'x']);
  t.match(c.stderr, /--cmdline is the test guest's; a Linux kernel's command line is --append/);
});
