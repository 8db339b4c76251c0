// The Linux guest image: the rig's own bzImage as the guest kernel (it has
// igb, igbvf and kvm-clock built in) and an initramfs with Debian's
// busybox-static, iperf3 and lspci with their libraries, a static UDP echo
// service and rig/guest/init.sh. Cached by content hash, like L1's.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cacheDir, RigError, rigSourceDir } from './paths.js';
import { ensureKernel, KERNEL_VARIANTS, type KernelVariant } from './kernel.js';
import { buildInitramfs } from './initramfs.js';

/** Host programs copied in with their shared libraries, and the Debian package each comes from. */
const PROGRAMS: Record<string, string> = { '/usr/bin/iperf3': 'iperf3', '/usr/bin/lspci': 'pciutils' };
const FILES: Record<string, string> = { '/bin/busybox': 'busybox-static', '/usr/share/misc/pci.ids': 'pciutils' };

export interface GuestImage {
  kernel: string;
  initrd: string;
}

function sharedLibraries(program: string): string[] {
  const out = execFileSync('ldd', [program], { encoding: 'utf8' });
  return [...out.matchAll(/(\/\S+\.so[.\d]*)/g)].map((m) => m[1]!);
}

/** Returns the initramfs path, building it when the cache has none. */
export function ensureGuestInitramfs(cache = cacheDir()): string {
  for (const [f, pkg] of Object.entries({ ...PROGRAMS, ...FILES })) {
    if (!existsSync(f)) throw new RigError(`${f} is missing for the Linux guest image: install it with: apt-get install -y ${pkg}`);
  }
  const src = join(rigSourceDir(), 'guest');
  const inputs = [join(src, 'init.sh'), join(src, 'udp-echo.c'), ...Object.keys(FILES)];
  const copies = new Set<string>(Object.keys(FILES));
  for (const p of Object.keys(PROGRAMS)) [p, ...sharedLibraries(p)].forEach((f) => copies.add(f));
  const hash = createHash('sha256');
  // Named by where they land (the checkout may be anywhere), read from where they are.
  for (const f of [...inputs, ...copies]) hash.update(f.startsWith(src) ? f.slice(src.length) : f).update(readFileSync(f));
  const out = join(cache, `guest-initramfs-${hash.digest('hex').slice(0, 16)}.cpio.gz`);
  if (existsSync(out)) return out;

  process.stderr.write('rig: building the Linux guest initramfs (busybox, iperf3, lspci, udp-echo) ...\n');
  buildInitramfs(out, (stage) => {
    for (const f of copies) {
      const to = join(stage, f);
      mkdirSync(dirname(to), { recursive: true });
      copyFileSync(f, to);
    }
    execFileSync('gcc', ['-O2', '-static', '-o', join(stage, 'bin', 'udp-echo'), join(src, 'udp-echo.c')], { stdio: 'inherit' });
    copyFileSync(join(src, 'init.sh'), join(stage, 'init'));
  });
  return out;
}

/** The guest kernel (the rig kernel of `variant`) and the guest initramfs. */
export function ensureGuestImage(variant: KernelVariant = 'type1'): GuestImage {
  return { kernel: ensureKernel(variant), initrd: ensureGuestInitramfs() };
}

// `node dist/rig/guest-image.js [type1|compat]...`: builds what is missing and prints the paths (setup runs this).
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const variants = (process.argv.length > 2 ? process.argv.slice(2) : [...KERNEL_VARIANTS]) as KernelVariant[];
  for (const v of variants) {
    const g = ensureGuestImage(v);
    console.log(`${v} ${g.kernel} ${g.initrd}`);
  }
}
