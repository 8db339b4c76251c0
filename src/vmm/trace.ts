// Start-up timeline on stderr when PINION_TRACE is set: milliseconds since
// the process started (Node's own bootstrap included) at each phase.
const on = !!process.env.PINION_TRACE;

export function trace(phase: string): void {
  if (on) process.stderr.write(`pinion: trace +${performance.now().toFixed(0)} ms ${phase}\n`);
}
