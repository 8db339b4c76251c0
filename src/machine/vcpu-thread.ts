// A vCPU's thread: builds its buses, reports its thread id (so the VMM can
// kick it out of KVM_RUN), runs the loop, and reports how it ended.
import { parentPort, workerData } from 'node:worker_threads';
import { pinCore } from '../memory/pin-core.js';
import { CONTROL, GO, STOP_REASON, VCPU_STATE, VcpuRunner, vcpuWords, type RunEnd } from '../vmm/run-loop.js';
import { buildBuses, type DeviceSpec } from './devices.js';
import { RpcClient } from '../vmm/bus-rpc.js';
import type { ExitCount } from '../vmm/exit-profile.js';

export interface VcpuThreadData {
  fd: number;
  index: number;
  mmapSize: number;
  control: SharedArrayBuffer;
  devices: DeviceSpec[];
  /** This vCPU's slot for accesses served on the VMM thread. */
  rpc: SharedArrayBuffer;
}

export type VcpuMessage =
  | { type: 'ready'; thread: bigint }
  | { type: 'stop' }
  | { type: 'panic'; line: string }
  | { type: 'io' }
  | { type: 'done'; end: RunEnd; exits: number; profile?: ExitCount[] };

const d = workerData as VcpuThreadData;
const post = (m: VcpuMessage): void => parentPort!.postMessage(m);

pinCore.kickInit();
let runner: VcpuRunner | undefined;
const rpc = new RpcClient(d.rpc, () => post({ type: 'io' }));
const buses = buildBuses(
  d.devices,
  {
    exit: (status) => {
      if (runner?.requestStop(STOP_REASON.guestExit, status)) post({ type: 'stop' });
    },
    reset: () => {
      if (runner?.requestStop(STOP_REASON.guestReset)) post({ type: 'stop' });
    },
    panic: (line) => {
      if (runner?.requestStop(STOP_REASON.guestPanic)) post({ type: 'panic', line });
    },
    poweroff: () => {
      if (runner?.requestStop(STOP_REASON.guestPoweroff)) post({ type: 'stop' });
    },
  },
  rpc,
);
post({ type: 'ready', thread: pinCore.threadSelf() });
const control = new Int32Array(d.control);
Atomics.store(control, vcpuWords(d.index).state, VCPU_STATE.waiting);
while (Atomics.load(control, CONTROL.go) === GO.wait) Atomics.wait(control, CONTROL.go, GO.wait, 1000);
// Closed before it ran: the vCPU fd may already be closed, or its number reused.
if (Atomics.load(control, CONTROL.go) === GO.closed) {
  Atomics.store(control, vcpuWords(d.index).state, VCPU_STATE.ended);
  process.exit(0);
}
runner = VcpuRunner.open(d.fd, d.index, d.mmapSize, buses.pio, buses.mmio, control);
// A paused VM may be handed to another process: half a console line held here would be lost with this one.
runner.onHold = () => buses.flush();
let end: RunEnd;
try {
  end = runner.loop();
} catch (e) {
  end = { kind: 'fault', report: `vCPU ${d.index}: ${(e as Error).message}` };
  runner.requestStop(STOP_REASON.guestFault);
}
runner.setState(VCPU_STATE.ended);
if (end.kind === 'fault') post({ type: 'stop' });
buses.flush();
runner.close();
post({ type: 'done', end, exits: runner.exits, profile: runner.profile?.entries() });
// Stay alive until the VMM has forgotten this thread's id: once it ends, the kernel may give the id to
// another thread, which a kick (tgkill) would then interrupt.
const released = vcpuWords(d.index).released;
while (Atomics.load(control, released) === 0) Atomics.wait(control, released, 0, 1000);
