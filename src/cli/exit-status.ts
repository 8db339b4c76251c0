// How a VM's end becomes Pinion's exit status, with its one line on stderr:
// the guest's own status, 0 for a reboot or power-off, 1 for a panic or a
// fault, 130/143 for a signal, 0 for an asked-for stop or a live update that
// moved the VM to another process, 1 for one that lost it.
import type { MachineResult } from '../machine/machine.js';

/** `stops`: the reasons the control API stops a VM with, when it runs one. */
export function exitStatus(r: MachineResult, stops?: { api: string; update: string; lost: string }): number {
  if (r.kind === 'exit') return r.status;
  // A VM has no reset here: a guest that reboots ends it, as a poweroff would.
  if (r.kind === 'panic') {
    console.error(`pinion: guest kernel panic: ${r.line}`);
    return 1;
  }
  if (r.kind === 'poweroff') {
    console.error('pinion: guest powered off; the VM ends');
    return 0;
  }
  if (r.kind === 'reset') {
    console.error('pinion: guest reset (reboot); the VM ends');
    return 0;
  }
  if (r.kind === 'fault') {
    console.error(`pinion: guest stopped: ${r.report}`);
    return 1;
  }
  if (stops && r.why.startsWith(stops.update)) {
    console.error(`pinion: ${r.why}; this process ends`);
    return 0;
  }
  console.error(`pinion: VM stopped: ${r.why}`);
  if (stops && r.why === stops.api) return 0; // asked for: not a failure
  if (stops && r.why.startsWith(stops.lost)) return 1;
  return r.why.startsWith('signal SIGINT') ? 130 : 143;
}
