// Exit round trips in L1: Pinion's vCPU loop (VcpuRunner.step: KVM_RUN through
// koffi, the exit decoded from kvm_run, dispatched on its bus) against the C
// loop of bench/ref/piobench.c (built as a library), both on the same vCPU of
// the same VM running the same guest loop, in one process: the test guest's
// `pio` (OUT to port 0x80) and `mmio` (32-bit writes to an address nothing
// claims). Method of bench/method.ts: ABBA rounds; each side's figure in a
// round is the median of 3 batches, a batch one clock span until N target
// exits were handled, divided by N. Every other exit is counted by kind and
// port or address, and KVM's own counters for the VM (debugfs) must add up.
// Usage (in L1, as root): node dist/bench/pio.js LIBPIOBENCH_SO OUT_JSON
import koffi from 'koffi';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Machine } from '../src/machine/machine.js';
import { mmapFd, MAP_SHARED } from '../src/sys/libc.js';
import * as K from '../src/sys/kvm.js';
import { inlineRunner } from './inline-vcpu.js';
import { median } from './stats.js';
import { makeRun, provenance, runCell, withRun, type Cell, stopRule } from './method.js';

const [cLib = '', outFile = ''] = process.argv.slice(2);
const GUEST = fileURLToPath(new URL('../guest/pinion-guest.elf', import.meta.url));
const BATCH = Number(process.env.PINION_BENCH_BATCH ?? 5000);
const SAMPLES = 3;
const RULE = stopRule({ minRounds: 4, maxRounds: 40, maxSeconds: 120 });
// guest/guest.h's POST_PORT and MMIO_BENCH_ADDR.
const CASES = [
  { name: 'port I/O: OUT to 0x80', cmdline: 'pio', mmio: false, target: 0x80 },
  { name: 'MMIO: write to 0xd0000000', cmdline: 'mmio', mmio: true, target: 0xd000_0000 },
] as const;
const TALLY_ROWS = 16;
const TALLY_COLS = 5;
const INTERRUPTED = 0xffffffff;

if (!existsSync(cLib))
  throw new Error(`C reference ${cLib || '(none)'} not found: pass libpiobench.so built from bench/ref/piobench.c with -DPIOBENCH_LIB`);
const lib = koffi.load(cLib);
const piobenchBatch = lib.func(
  'int64_t piobench_batch(int vcpu_fd, uint64_t run_addr, int mmio, uint64_t target, uint64_t want, _Inout_ void *t, uint32_t rows)',
);

type Tally = Record<string, number>;
const bump = (t: Tally, key: string, n = 1): void => void (t[key] = (t[key] ?? 0) + n);

/** An exit's name in the tallies, both sides alike: "io out 0x80/1", "mmio write 0xd0000000/4", "intr", "interrupted". */
function exitKey(reason: number, addr: number, write: boolean, size: number): string {
  if (reason === INTERRUPTED) return 'interrupted';
  if (reason === K.KVM_EXIT_IO) return `io ${write ? 'out' : 'in'} 0x${addr.toString(16)}/${size}`;
  if (reason === K.KVM_EXIT_MMIO) return `mmio ${write ? 'write' : 'read'} 0x${addr.toString(16)}/${size}`;
  if (reason === K.KVM_EXIT_INTR) return 'intr';
  return `exit reason ${reason}`;
}

/** KVM's userspace exit counters for this process's one VM, or null without debugfs. */
function kvmCounters(): { io: number; mmio: number } | null {
  const root = '/sys/kernel/debug/kvm';
  try {
    // One VM at a time in this process; a second directory (one not yet gone) would make the count ambiguous.
    const dirs = readdirSync(root).filter((d) => d.startsWith(`${process.pid}-`));
    const dir = dirs.length === 1 ? dirs[0]! : undefined;
    if (!dir) return null;
    const n = (f: string): number => Number(readFileSync(join(root, dir, f), 'utf8'));
    return { io: n('io_exits'), mmio: n('mmio_exits') };
  } catch {
    return null;
  }
}

interface Side {
  target: number;
  others: Tally;
  /** KVM's count of the kind being measured (io_exits or mmio_exits) over this side's batches. */
  kvm: number | null;
}

async function exitCell(c: (typeof CASES)[number]): Promise<{ cell: Cell; exits: Record<string, unknown> }> {
  const m = Machine.create({ payload: GUEST, memory: 64n << 20n, cpus: 1, backend: 'memfd', cmdline: c.cmdline, consoleFd: 1 });
  const seat = m.vcpuSeat(0);
  const { runner } = inlineRunner(m, 0);
  const run = mmapFd(seat.mmapSize, MAP_SHARED, seat.fd, 0n, 'bench kvm_run');
  const v = new DataView(run.bytes.buffer, run.bytes.byteOffset, run.bytes.byteLength);
  const R = K.kvm_run;
  const isTarget = c.mmio
    ? (reason: number): boolean =>
        reason === K.KVM_EXIT_MMIO &&
        v.getUint8(R.mmio.is_write) !== 0 &&
        v.getUint32(R.mmio.phys_addr, true) === c.target &&
        v.getUint32(R.mmio.phys_addr + 4, true) === 0
    : (reason: number): boolean =>
        reason === K.KVM_EXIT_IO && v.getUint8(R.io.direction) === K.KVM_EXIT_IO_OUT && v.getUint16(R.io.port, true) === c.target;
  const sides: Record<'pinion' | 'reference', Side> = {
    pinion: { target: 0, others: {}, kvm: 0 },
    reference: { target: 0, others: {}, kvm: 0 },
  };
  let runnerExits = 0;

  const pinionBatch = (want: number, s: Side): number => {
    let done = 0;
    const before = runner.exits;
    const t0 = process.hrtime.bigint();
    let other = 0;
    while (done < want) {
      const e = runner.exits;
      const fault = runner.step();
      if (fault) throw new Error(fault);
      const reason = v.getUint32(R.exit_reason, true);
      if (runner.exits !== e && isTarget(reason)) {
        done++;
        continue;
      }
      bump(s.others, runner.exits === e ? 'interrupted' : otherKey(reason));
      // A guest that left its loop (an old build without this case ends at once) would be waited on for good.
      if (++other > 10_000)
        throw new Error(
          `the test guest made ${other} exits other than ${c.name} (${JSON.stringify(s.others)}); is dist/guest/pinion-guest.elf current? npm run build:guest`,
        );
    }
    const ns = Number(process.hrtime.bigint() - t0);
    s.target += done;
    runnerExits += runner.exits - before;
    return ns;
  };
  const otherKey = (reason: number): string =>
    reason === K.KVM_EXIT_IO
      ? exitKey(reason, v.getUint16(R.io.port, true), v.getUint8(R.io.direction) === K.KVM_EXIT_IO_OUT, v.getUint8(R.io.size))
      : reason === K.KVM_EXIT_MMIO
        ? exitKey(reason, Number(v.getBigUint64(R.mmio.phys_addr, true)), v.getUint8(R.mmio.is_write) !== 0, v.getUint32(R.mmio.len, true))
        : exitKey(reason, 0, false, 0);
  const tally = Buffer.alloc(TALLY_ROWS * TALLY_COLS * 8);
  const cBatch = (want: number, s: Side): number => {
    tally.fill(0);
    const ns = Number(piobenchBatch(seat.fd, run.vaddr, c.mmio ? 1 : 0, BigInt(c.target), BigInt(want), tally, TALLY_ROWS));
    for (let i = 0; i < TALLY_ROWS; i++) {
      const row = (j: number): number => Number(tally.readBigUInt64LE((i * TALLY_COLS + j) * 8));
      if (row(4)) bump(s.others, exitKey(row(0), row(1), row(2) !== 0, row(3)), row(4));
    }
    if (ns < 0) throw new Error(`piobench_batch: errno ${-ns} (exits other than the target: ${JSON.stringify(s.others)})`);
    s.target += want;
    return ns;
  };
  /** One side's figure for a round: median over the batches, µs per target exit; KVM's counter read around them. */
  const figure = (batch: (want: number, s: Side) => number, s: Side): number => {
    const k0 = kvmCounters();
    const us = median(Array.from({ length: SAMPLES }, () => batch(BATCH, s))) / BATCH / 1000;
    const k1 = kvmCounters();
    s.kvm = k0 && k1 && s.kvm !== null ? s.kvm + (c.mmio ? k1.mmio - k0.mmio : k1.io - k0.io) : null;
    return us;
  };

  // Warm-up, uncounted: the guest's boot up to its loop, the JIT, both sides' first exits.
  const warm: Side = { target: 0, others: {}, kvm: null };
  pinionBatch(2000, warm);
  cBatch(2000, warm);
  runnerExits = 0; // the runner's count is checked against the measured batches only
  const cell = await runCell(
    {
      name: c.name,
      unit: 'µs/exit',
      better: 'lower',
      figure: `median of ${SAMPLES} batches, each one clock span until ${BATCH} target exits were handled / ${BATCH}`,
    },
    RULE,
    () => figure(pinionBatch, sides.pinion),
    () => figure(cBatch, sides.reference),
  );
  run.unmap();
  runner.close();
  m.close();

  // Every exit of the measured kind is either a target or in the tally; KVM's counter says how many there were.
  const kind = c.mmio ? 'mmio ' : 'io ';
  const check = (s: Side): { counted: number; kvm: number | null; agree: boolean | null } => {
    const counted = s.target + Object.entries(s.others).reduce((a, [k, n]) => a + (k.startsWith(kind) ? n : 0), 0);
    return { counted, kvm: s.kvm, agree: s.kvm === null ? null : s.kvm === counted };
  };
  const pinionOthersHandled = Object.entries(sides.pinion.others).reduce((a, [k, n]) => a + (k === 'interrupted' ? 0 : n), 0);
  const exits = {
    target: c.mmio ? `mmio write 0x${c.target.toString(16)}/4` : `io out 0x${c.target.toString(16)}/1`,
    pinion: {
      ...sides.pinion,
      check: check(sides.pinion),
      runnerExits,
      runnerAgrees: runnerExits === sides.pinion.target + pinionOthersHandled,
    },
    reference: { ...sides.reference, check: check(sides.reference) },
  };
  // Kept in the file either way, but a cell whose counts do not add up is not a figure to count.
  if (exits.pinion.check.agree === false || exits.reference.check.agree === false || !exits.pinion.runnerAgrees) {
    cell.invalid = 'exit counts do not add up (extra.exits)';
    failures.push(c.name);
  }
  console.log(
    JSON.stringify({
      name: cell.name,
      estimate: cell.estimate,
      ci: cell.ci,
      rounds: cell.rounds.length,
      noiseBound: cell.noiseBound,
      exits,
    }),
  );
  return { cell, exits };
}

const failures: string[] = [];
const results = [];
for (const c of CASES) results.push(await exitCell(c));
const r = makeRun({
  benchmark: 'pio',
  variant: process.env.PINION_RIG_KERNEL ?? 'type1',
  reference: 'C exit loop (bench/ref/piobench.c, -DPIOBENCH_LIB) on the same vCPU of the same VM, same process',
  provenance: provenance(),
  cells: results.map((x) => x.cell),
  // The target: Pinion's exit within 1.15x of C's (C time / Pinion time >= 0.87); the older 1.5x beside it.
  thresholds: [0.87, +(1 / 1.5).toFixed(3)],
  extra: { batch: BATCH, samples: SAMPLES, exits: Object.fromEntries(results.map((x) => [x.cell.name, x.exits])) },
});
if (outFile) writeFileSync(outFile, withRun(existsSync(outFile) ? readFileSync(outFile, 'utf8') : undefined, r));
if (failures.length) {
  console.error(`pio: exit counts do not add up for ${failures.join(', ')}; see extra.exits in ${outFile || 'the output'}`);
  process.exitCode = 1;
}
