// SIGINT and SIGTERM for a VM the CLI runs: while it runs they stop it; once
// it has ended they are absorbed until released, so a signal that comes as
// the guest ends cannot cut the teardown short (DMA unmaps, device resets)
// and the exit status stays the VM's.
const SIGNALS = ['SIGINT', 'SIGTERM'] as const;

export interface VmSignals {
  /** The VM has ended: from now on a signal is absorbed. */
  ended(): void;
  /** The teardown is done: signals take their default action again. */
  release(): void;
}

export function stopOnSignals(stop: (why: string) => void): VmSignals {
  let running = true;
  const on = (sig: NodeJS.Signals): void => {
    if (running) stop(`signal ${sig}`);
  };
  for (const s of SIGNALS) process.on(s, on);
  return {
    ended: () => void (running = false),
    release: () => SIGNALS.forEach((s) => process.off(s, on)),
  };
}
