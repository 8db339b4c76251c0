// Fault points of the new process, for tests that show the old process
// takes the VM back whatever step the new one dies at:
// PINION_UPDATE_FAULT=kill:STEP (SIGKILL here) or refuse:STEP (refuse with a
// made-up reason). STEP is one of INCOMING_POINTS. Or unchecked: no memlock
// pre-flight, so the kernel's own charge (type1's VADDR re-map, iommufd's
// CHANGE_PROCESS) is what refuses. Unset, nothing happens.
export const INCOMING_POINTS = ['start', 'prepare', 'ready', 'restore', 'restored'] as const;
export type IncomingPoint = (typeof INCOMING_POINTS)[number];

export class InjectedFault extends Error {
  override readonly name = 'InjectedFault';
}

export function faultPoint(point: IncomingPoint, env: NodeJS.ProcessEnv = process.env): void {
  const m = /^(kill|refuse):(\w+)$/.exec(env.PINION_UPDATE_FAULT ?? '');
  if (!m || m[2] !== point) return;
  if (m[1] === 'kill') process.kill(process.pid, 'SIGKILL');
  throw new InjectedFault(`fault injected at ${point} (PINION_UPDATE_FAULT)`);
}

/** PINION_UPDATE_FAULT=unchecked: the new process takes the VM without its memlock pre-flight. */
export function preflightWaived(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.PINION_UPDATE_FAULT === 'unchecked';
}
