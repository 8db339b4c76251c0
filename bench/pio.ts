// Port-I/O exit round trip in L1: Pinion's vCPU loop (VcpuRunner.step: KVM_RUN
// through koffi, exit decoded from kvm_run, dispatched on the port bus) against
// the C reference (bench/ref/piobench.c) running the same guest loop on the
// same kernel in the same boot. Rounds alternate; medians compared.
// Usage (in L1, as root): node dist/bench/pio.js PIOBENCH_BINARY OUT_JSON
import { measure } from 'mitata';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Machine } from '../src/machine/machine.js';
import { inlineRunner } from './inline-vcpu.js';
import { median } from './stats.js';

const [cRef = '', outFile = ''] = process.argv.slice(2);
const GUEST = fileURLToPath(new URL('../guest/pinion-guest.elf', import.meta.url));
const ROUNDS = 5;
const C_EXITS = 20000;

function cNsPerExit(): number {
  const r = spawnSync(cRef, [GUEST, 'pio', String(C_EXITS), '3'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`piobench: ${r.stderr.trim()}`);
  return median(
    r.stdout
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { nsPerExit: number }).nsPerExit),
  );
}

if (!existsSync(cRef))
  throw new Error(`C reference ${cRef || '(none)'} not found: pass the piobench binary built from bench/ref/piobench.c`);
const m = Machine.create({ payload: GUEST, memory: 64n << 20n, cpus: 1, backend: 'memfd', cmdline: 'pio', consoleFd: 1 });
const { runner } = inlineRunner(m, 0);
for (let i = 0; i < 2000; i++) if (runner.step()) throw new Error('guest stopped during warm-up');
const ours: number[] = [];
const ref: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const stats = await measure(() => void runner.step(), { min_cpu_time: 1e9, batch_samples: 1 });
  ours.push(stats.p50);
  ref.push(cNsPerExit());
}
const exitsOnPort80 = runner.exits;
runner.close();
m.close();
const [pn, cn] = [median(ours), median(ref)];
const row = {
  pinionNsPerExit: Math.round(pn),
  cNsPerExit: Math.round(cn),
  ratio: +(pn / cn).toFixed(3),
  rounds: ROUNDS,
  pinionRounds: ours.map(Math.round),
  cRounds: ref.map(Math.round),
  exitsOnPort80,
};
console.log(JSON.stringify(row));
const out = {
  date: new Date().toISOString(),
  note: 'ratio = Pinion ns / C ns per port-I/O exit round trip (medians over alternating rounds, same boot); target <= 1.5',
  ...row,
};
if (outFile) writeFileSync(outFile, JSON.stringify(out, null, 2) + '\n');
