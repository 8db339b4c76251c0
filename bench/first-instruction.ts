// Time from the VMM's start to its guest's first console line, with one igb
// VF assigned, so that all of guest RAM is faulted in and DMA-mapped before
// the guest runs: Pinion (`pinion run`, anonymous RAM with THP as QEMU's,
// prefaulted on threads, then mapped) with the test guest, whose first line
// is its hello; QEMU with `-mem-prealloc` (its threads touch every page, then
// vfio-pci maps it) and SeaBIOS, whose version line is the first it prints
// after a few ms of its own. For 64 MiB and 1 GiB, on iommufd and the legacy
// container, in one L1 boot on the same VF. Method of bench/method.ts: ABBA
// rounds, one start per side a round; ratio = QEMU time / Pinion time.
// Usage (in L1, as root): node dist/bench/first-instruction.js KERNEL_VARIANT OUT_JSON
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { PINION_CLI, QEMU_CONSOLE, QEMU_MACHINE, qemuVfio, vfsForGuests, type Vmm } from '../rig/l1/linux-guest.js';
import type { IommuKind } from '../src/devices/vfio/iommu.js';
import { inOrder, makeRun, provenance, runRounds, stopRule, withRun, type CellSpec, type RoundFigures } from './method.js';

const [variant = 'type1', outFile = ''] = process.argv.slice(2);
const GUEST = fileURLToPath(new URL('../guest/pinion-guest.elf', import.meta.url));
const RULE = stopRule({ minRounds: 4, maxRounds: 8, maxSeconds: 900 });
const SIZES = [
  ['64 MiB', '64M'],
  ['1 GiB', '1G'],
] as const;
const PATHS: IommuKind[] = ['iommufd', 'legacy'];
const FIRST_LINE: Record<Vmm, RegExp> = { pinion: /pinion-guest: hello/, qemu: /SeaBIOS \(version/ };
const LIMIT_MS = 120_000;
const log = (s: string): void => void process.stderr.write(`first-instruction ${(performance.now() / 1000).toFixed(0)}s: ${s}\n`);

const { vfs } = vfsForGuests(1);
const vf = vfs[0]!;

function argv(vmm: Vmm, iommu: IommuKind, memory: string): [string, string[]] {
  if (vmm === 'pinion')
    return [
      process.execPath,
      [PINION_CLI, 'run', '--payload', GUEST, '--memory', memory, '--memory-backend', 'anon', '--device', vf, '--iommu', iommu],
    ];
  return ['qemu-system-x86_64', [...QEMU_MACHINE, '-m', memory, '-mem-prealloc', ...QEMU_CONSOLE, ...qemuVfio(iommu, vf)]];
}

/** ms from spawning the VMM to its guest's first line on the console; the VMM is then killed and gone. */
function firstLine(vmm: Vmm, iommu: IommuKind, memory: string): Promise<number> {
  const [cmd, args] = argv(vmm, iommu, memory);
  const t0 = performance.now();
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  return new Promise<number>((resolve, reject) => {
    let at: number | undefined;
    const timer = setTimeout(() => p.kill('SIGKILL'), LIMIT_MS);
    p.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (at === undefined && FIRST_LINE[vmm].test(out)) {
        at = performance.now() - t0;
        p.kill('SIGKILL');
      }
    });
    p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      if (at !== undefined) resolve(at);
      else reject(new Error(`${vmm} ${iommu} ${memory}: no first line (exit ${code ?? signal})\n${out.slice(-500)}\n${err.slice(-1000)}`));
    });
  });
}

const SPECS: CellSpec[] = PATHS.flatMap((iommu) =>
  SIZES.map(([label]) => ({
    name: `${iommu}, ${label}: start to the guest's first line`,
    unit: 'ms',
    better: 'lower' as const,
    figure: `one start's ms from spawn to the first console line (Pinion: the test guest's hello; QEMU: SeaBIOS's version line), L1's clock`,
  })),
);
const raw: { round: number; vmm: Vmm; iommu: IommuKind; memory: string; ms: number }[] = [];

async function round(k: number, order: 'AB' | 'BA'): Promise<RoundFigures> {
  const out: RoundFigures = {};
  for (const iommu of PATHS)
    for (const [label, memory] of SIZES) {
      const one = async (vmm: Vmm): Promise<number> => {
        const ms = await firstLine(vmm, iommu, memory);
        raw.push({ round: k, vmm, iommu, memory, ms: Math.round(ms) });
        return ms;
      };
      const [pinion, reference] = await inOrder(
        order,
        () => one('pinion'),
        () => one('qemu'),
      );
      log(`round ${k} ${iommu} ${label}: pinion ${pinion.toFixed(0)} ms, qemu ${reference.toFixed(0)} ms`);
      out[`${iommu}, ${label}: start to the guest's first line`] = { pinion, reference };
    }
  return out;
}

const cells = await runRounds(SPECS, RULE, round);
const run = makeRun({
  benchmark: 'first-instruction',
  variant,
  reference: 'QEMU 10 with -mem-prealloc and SeaBIOS, the same VF and path, same L1 boot',
  provenance: { ...provenance(), rigKernel: process.env.PINION_RIG_KERNEL_ID ?? variant },
  cells,
  extra: { vf, raw },
});
if (outFile) writeFileSync(outFile, withRun(existsSync(outFile) ? readFileSync(outFile, 'utf8') : undefined, run));
console.log(JSON.stringify(cells.map((c) => ({ name: c.name, estimate: c.estimate, ci: c.ci }))));
process.exit(0);
