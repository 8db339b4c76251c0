// Runs in L1 as root: the test guest's chaos mode (guest/chaos.c) on an igb
// VF, one VM per seed, while a second VM streams the peer's frames on
// another VF of the same PF. Each seed's VM gets 30 s, then SIGTERM. For
// each: how it ended, its stderr, how far its acts got and when it last said
// so, whether it brought the NIC up first (the
// previous VM left the function usable), what stays pinned. At the end: one
// more VM runs the VF test on the chaos VF, the bystander's totals, and L1's
// kernel log since the start (warnings and IOMMU faults). Prints one JSON
// object for test/rig/chaos.test.ts.
//
//   chaos.js [SEEDS] [FIRST_SEED] [SEED_LIMIT_S]
import { spawn } from 'node:child_process';
import { assignablePf } from '../../rig/l1/sysfs.js';
import { CLI, GUEST, pinnedKiB, progress, run } from './pinion.js';
import { dmarFaults, dmesg, kernelWarnings, MiB, Peer, sleep, StreamVm, streamVfs } from './stream-vm.js';

const SEEDS = Number(process.argv[2] ?? 20);
const FIRST = Number(process.argv[3] ?? 1);
const SEED_LIMIT_MS = Number(process.argv[4] ?? 30) * 1000;
// The bystander's stream: longer than every seed could last (its limit and the SIGKILL after it); it is
// stopped once the seeds are done.
const INTERVAL_MS = 15;
const FRAMES = Math.ceil((SEEDS * (SEED_LIMIT_MS + 30_000)) / INTERVAL_MS);

const [chaosVf, streamVf] = streamVfs(assignablePf().bdf, 2);
const peer = new Peer();
const dmesgBefore = dmesg().length;
const out: Record<string, unknown> = { seeds: SEEDS, first: FIRST, vf: chaosVf!.bdf, bystanderVf: streamVf!.bdf, frames: FRAMES };

const bystander = new StreamVm({ name: 'bystander', iommu: 'iommufd', how: 'user', vf: streamVf!.bdf, limit: 160 * MiB });
if (!(await bystander.ready(180_000))) {
  bystander.kill();
  out.error = `the bystander did not get its NIC going; exit ${await bystander.end}`;
  console.log(JSON.stringify({ ...out, stderr: bystander.stderr, console: bystander.consoleText() }));
  process.exit(0);
}
peer.send(INTERVAL_MS, FRAMES);
await bystander.until(() => (bystander.counters()?.rx ?? 0) > 0, 30_000);
// What the bystander pins: the baseline every chaos VM must leave behind.
const baseline = pinnedKiB();

export interface SeedRun {
  seed: number;
  status: number | null;
  signal: string | null;
  /** SIGTERM after SEED_LIMIT_MS: the guest was still going (a hang the chaos caused). */
  stopped: boolean;
  ms: number;
  nicUp: boolean;
  done?: string;
  /** The last "chaos: ops=N" count. */
  ops: number;
  /** If stopped: how long the guest had been quiet (no ops line) when SIGTERM came, in ms. */
  quietMs: number | null;
  stdoutTail: string;
  stderr: string;
  pinnedAfter: number;
  peerRunning: boolean;
  bystanderLost: number | undefined;
}

function chaosVm(seed: number): Promise<SeedRun> {
  const args = [
    'run',
    '--payload',
    GUEST,
    '--device',
    chaosVf!.bdf,
    '--iommu',
    seed % 2 ? 'iommufd' : 'legacy',
    '--cmdline',
    `chaos=${seed}`,
  ];
  progress(`seed ${seed}: pinion ${args.join(' ')}`);
  const t0 = Date.now();
  const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let stopped = false;
  let ops = 0;
  let opsAt: number | null = null;
  p.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    const counts = [...stdout.slice(-2048).matchAll(/^pinion-guest: chaos: ops=(\d+)$/gm)];
    const last = Number(counts.at(-1)?.[1] ?? 0);
    if (last > ops) [ops, opsAt] = [last, Date.now()];
  });
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let quietMs: number | null = null;
  const term = setTimeout(() => {
    stopped = true;
    quietMs = Date.now() - (opsAt ?? t0);
    p.kill('SIGTERM');
  }, SEED_LIMIT_MS);
  const kill = setTimeout(() => p.kill('SIGKILL'), SEED_LIMIT_MS + 30_000);
  return new Promise((resolve) =>
    p.on('close', (status, signal) => {
      clearTimeout(term);
      clearTimeout(kill);
      resolve({
        seed,
        status,
        signal,
        stopped,
        ms: Date.now() - t0,
        nicUp: /^pinion-guest: chaos: nic up$/m.test(stdout),
        done: /^pinion-guest: (chaos: done .*)$/m.exec(stdout)?.[1],
        ops,
        quietMs,
        stdoutTail: stdout
          .split('\n')
          .filter((l) => !/^pinion-guest: chaos: ops=/.test(l))
          .slice(-6)
          .join('\n'),
        stderr,
        pinnedAfter: pinnedKiB(),
        peerRunning: !peer.ended,
        bystanderLost: bystander.counters()?.lost,
      });
    }),
  );
}

const seeds: SeedRun[] = [];
for (let s = FIRST; s < FIRST + SEEDS; s++) {
  const r = await chaosVm(s);
  progress(
    `  seed ${s}: ${r.stopped ? 'stopped' : `exit ${r.status ?? r.signal}`} in ${r.ms} ms; ${r.done ?? `no done line, ops=${r.ops}`}; ${r.stderr.trim().split('\n').at(-1) ?? ''}`,
  );
  seeds.push(r);
}
out.seeds = seeds;
out.baseline = baseline;
// The next VM on the chaos VF: the VF test (igbvf.c) must pass on it.
out.after = run(['--device', chaosVf!.bdf, '--iommu', 'iommufd', '--cmdline', 'igb']);

out.peerMs = await peer.stop(0);
await sleep(500);
out.bystander = { ...(await bystander.finish(peer.sent)), vmmStderr: bystander.stderr };
const log = dmesg().slice(dmesgBefore - 1);
out.kernelWarnings = kernelWarnings(log);
out.dmarFaults = dmarFaults(log).length;
out.pinnedEnd = pinnedKiB();
console.log(JSON.stringify(out));
