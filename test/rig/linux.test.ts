// A Linux kernel booted by `pinion run --kernel` in the rig: the rig's own
// bzImage with a busybox initramfs. Both vCPUs come online (MP table, INIT/
// SIPI), /proc/iomem is the guest memory map, the console works both ways
// through the 16550's interrupt, and `reboot -f` ends the VM with status 0.
// The kernel boots both ways: through the bzImage's own decompressor (the
// default), and inflated by Pinion and entered at vmlinux's startup_64.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureKernel } from '../../rig/kernel.js';
import { CLI, inRig } from '../support/rig.js';

const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
echo "guest: cpus=$(grep -c ^processor /proc/cpuinfo)"
grep -E 'System RAM|Reserved' /proc/iomem | sed 's/^/guest: iomem /'
echo "guest: ready"
read -r line
echo "guest: read '$line'"
reboot -f
`;

function initramfs(dir: string): string {
  const root = join(dir, 'root');
  for (const d of ['bin', 'proc', 'dev']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
  writeFileSync(join(root, 'init'), INIT);
  chmodSync(join(root, 'init'), 0o755);
  const out = join(dir, 'initramfs.cpio.gz');
  execFileSync('sh', ['-c', `find . | cpio -o -H newc --quiet | gzip -1 > ${out}`], { cwd: root });
  return out;
}

t.test('Linux boots with 2 vCPUs, its memory map, a two-way console, and reboot ends the VM', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pinion-linux-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const rd = initramfs(dir);
  const bz = ensureKernel('type1');
  // Typed once the guest reads (what comes before the driver opens the port is dropped, as on a real UART).
  // Every wait is bounded by L1's clock and ends as soon as the VMM does: under TCG a poll loop counted
  // in iterations runs far longer than its count suggests. A guest that dies before it is ready (nested
  // KVM on TCG triple-faults an early boot now and then, under QEMU too) gets one more boot, said on stderr.
  const run = [
    `mkfifo ${dir}/in; exec 3<>${dir}/in`,
    `for a in 1 2; do`,
    `  rm -f ${dir}/out; PINION_TRACE=1 ${process.execPath} ${CLI} run --kernel ${bz} --initrd ${rd} --append 'console=ttyS0 quiet' --cpus 2 --memory 256M --decompress vmm --console ${dir}/out < ${dir}/in 2>${dir}/err & pid=$!`,
    `  end=$(($(date +%s) + 240))`,
    `  until grep -q 'guest: ready' ${dir}/out 2>/dev/null || ! kill -0 $pid 2>/dev/null || [ $(date +%s) -ge $end ]; do sleep 0.2; done`,
    `  grep -q 'guest: ready' ${dir}/out 2>/dev/null && break`,
    `  kill -9 $pid 2>/dev/null; wait $pid`,
    `  [ $a = 1 ] && echo "EARLY CRASH: the guest was not ready; its VMM said: $(tail -n 3 ${dir}/err | tr '\n' ' ')" >&2`,
    `done`,
    `echo 'typed at the console' >&3`,
    `end=$(($(date +%s) + 120)); while kill -0 $pid 2>/dev/null && [ $(date +%s) -lt $end ]; do sleep 0.2; done`,
    `if kill -0 $pid 2>/dev/null; then echo "the VMM had not exited 120 s after the guest was told to reboot" >&2; kill -9 $pid; fi`,
    `wait $pid; rc=$?; cat ${dir}/err >&2; cat ${dir}/out; exit $rc`,
  ].join('\n');
  const r = await inRig('type1', ['sh', '-c', run], { timeoutSec: 600 });
  const early = /^EARLY CRASH: .*$/m.exec(r.stderr.toString());
  if (early) t.comment(early[0]);
  const out = r.stdout.toString();
  t.equal(r.exitCode, 0, `exit 0 (stderr: ${r.stderr.toString().trim().split('\n').pop()})`);
  t.match(r.stderr.toString(), /^pinion: guest reset \(reboot\); the VM ends$/m);
  t.match(r.stderr.toString(), /^pinion: trace \+\d+ ms kernel inflated: entering vmlinux$/m, 'Pinion inflated the gzip kernel');
  t.match(out, /^guest: cpus=2\r?$/m, 'both vCPUs online');
  t.match(out, /^guest: iomem 00001000-0009fbff : System RAM\r?$/m, 'base memory up to the BIOS area');
  t.match(out, /^guest: iomem 0009fc00-000fffff : Reserved\r?$/m, 'the BIOS area reserved');
  t.match(out, /^guest: iomem 00100000-0fffffff : System RAM\r?$/m, 'the rest of the 256 MiB from 1 MiB');
  t.match(out, /^guest: read 'typed at the console'\r?$/m, "Pinion's stdin reached the guest's console");
});

t.test(
  'a guest whose init is missing panics (the kernel decompressing itself, the default): the VM ends non-zero with the panic line',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'pinion-linux-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const rd = initramfs(dir);
    const bz = ensureKernel('type1');
    const r = await inRig(
      'type1',
      [
        'env',
        'PINION_TRACE=1',
        process.execPath,
        CLI,
        'run',
        '--kernel',
        bz,
        '--initrd',
        rd,
        '--append',
        'console=ttyS0 quiet rdinit=/missing',
        '--memory',
        '256M',
      ],
      { timeoutSec: 600 },
    );
    t.match(r.stderr.toString(), /^pinion: trace \+\d+ ms kernel decompresses itself: the default \(--decompress kernel\)$/m);
    t.equal(r.exitCode, 1);
    t.match(r.stderr.toString(), /^pinion: guest kernel panic: Kernel panic - not syncing: No working init found\./m);
  },
);
