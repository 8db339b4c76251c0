// pinion run --incoming FD: the new process of a live update. The old
// process started it with the channel at FD and the VM's fds after it; the
// VM comes from there (src/update/incoming.ts), the control API goes on on
// the same socket, built as run-vm.ts builds it with the old process's view
// carried over, and from then on this is `pinion run`: the guest's console
// where the old process had it, the exit status the guest's.
import { MachineControl, API_STOP, UPDATE_LOST, UPDATE_STOP } from '../api/vm-control.js';
import { ACK_WAIT_MS } from '../api/guest-hotplug.js';
import { ApiServer } from '../api/server.js';
import { VcpuThreads } from '../machine/vcpu-threads.js';
import { receive } from '../update/incoming.js';
import { exitStatus } from './exit-status.js';
import { stopOnSignals, type VmSignals } from './signals.js';

export async function incomingCommand(channelFd: number): Promise<number> {
  try {
    return await runIncoming(channelFd);
  } finally {
    // As run-vm.ts: a VM refused while its threads still load must not exit under a worker loading its addon.
    await VcpuThreads.settled(10_000);
  }
}

async function runIncoming(channelFd: number): Promise<number> {
  const inc = await receive(channelFd);
  const m = inc.machine;
  let control: MachineControl | undefined;
  let server: ApiServer | undefined;
  let signals: VmSignals | undefined;
  try {
    if (inc.api) {
      const c = (control = new MachineControl(m, ACK_WAIT_MS, inc.api.control));
      const { path, fd } = inc.api;
      server = await c.serve((h) => ApiServer.adopt(path, fd, h));
    }
    console.error(
      `pinion: VM taken over from pid ${inc.record.from.pid} (live update)${inc.api ? `; control API on ${inc.api.path}` : ''}`,
    );
    signals = stopOnSignals((why) => m.stop(why));
    const linux = m.config.linux !== undefined;
    const onInput = (d: Buffer): void => m.input(d);
    if (linux) process.stdin.on('data', onInput);
    const r = await inc.run;
    signals.ended();
    if (linux) process.stdin.off('data', onInput).pause();
    return exitStatus(r, { api: API_STOP, update: UPDATE_STOP, lost: UPDATE_LOST });
  } finally {
    control?.ended();
    await server?.close();
    m.close();
    // The API's backings go after the machine: until then KVM and the IOMMU may map them.
    control?.close();
    signals?.release();
  }
}
