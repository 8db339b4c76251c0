// Fault points of the new process, for tests that show the old process
// takes the VM back whatever step the new one dies at:
// PINION_UPDATE_FAULT=kill:STEP (SIGKILL here) or refuse:STEP (refuse with a
// made-up reason). STEP is one of INCOMING_POINTS. Unset, nothing happens.
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
