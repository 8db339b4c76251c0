// vCPU threads started before their vCPUs exist. A worker takes about as long
// to load as the VMM takes to assemble the machine (a second or more each in
// the rig), so `pinion run` starts one per vCPU right after its flags are
// checked, and each waits for its vCPU in its first message. Nothing here
// but node's worker API: this loads before the VMM's own modules.
import { Worker } from 'node:worker_threads';

/** A vCPU loop allocates little but steadily; V8's default young generation (tens of MiB a thread) would be resident for nothing. */
const VCPU_YOUNG_GEN_MB = 4;

/** What the VMM tells a spare thread that will never get a vCPU. */
export const SPARE_CLOSE = 'close';

interface Spare {
  worker: Worker;
  dead: boolean;
  exited: Promise<void>;
}

const spares: Spare[] = [];

function newWorker(workerData?: unknown): Worker {
  return new Worker(new URL('./vcpu-thread.js', import.meta.url), {
    workerData,
    resourceLimits: { maxYoungGenerationSizeMb: VCPU_YOUNG_GEN_MB },
  });
}

/** Starts `n` threads that load now and wait for their vCPU. */
export function prestartVcpuThreads(n: number): void {
  for (let i = 0; i < n; i++) {
    const worker = newWorker();
    const s: Spare = { worker, dead: false, exited: Promise.resolve() };
    // Until taken, a thread's failure to load only makes it unusable: the VMM then starts another.
    s.exited = new Promise<void>((resolve) => {
      worker.on('error', () => (s.dead = true));
      worker.on('exit', () => ((s.dead = true), resolve()));
    });
    spares.push(s);
  }
}

/** A thread for a vCPU: a spare one given `data`, or a new one started with it. */
export function vcpuThread(data: unknown): Worker {
  for (let s = spares.shift(); s; s = spares.shift()) {
    if (s.dead) continue;
    s.worker.removeAllListeners();
    s.worker.postMessage(data);
    return s.worker;
  }
  return newWorker(data);
}

/**
 * Tells the spare threads no vCPU is coming, and resolves once they have ended or after `ms`: node exiting
 * under a worker that is still loading a native addon can abort instead of exiting with the VMM's status.
 */
export async function settleSpareThreads(ms: number): Promise<void> {
  const left = spares.splice(0);
  for (const s of left) if (!s.dead) s.worker.postMessage(SPARE_CLOSE);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((r) => (timer = setTimeout(r, ms)));
  await Promise.race([Promise.all(left.map((s) => s.exited)), late]).finally(() => clearTimeout(timer));
}
