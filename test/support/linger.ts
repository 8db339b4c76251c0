// A test file whose tests are all done but whose process stays alive (a
// timer, socket or child left behind) would sit until the runner's per-file
// timeout. Once tap's root test ends, give the event loop a grace period,
// then name what keeps it alive and fail the file.
import t from 'tap';

// Longer than any wait the rig itself bounds (QEMU's exit after SIGKILL: 20 s).
const GRACE_MS = 45_000;

export function failIfLingering(graceMs = GRACE_MS): void {
  t.teardown(() => {
    const timer = setTimeout(() => {
      const counts = new Map<string, number>();
      for (const r of process.getActiveResourcesInfo()) counts.set(r, (counts.get(r) ?? 0) + 1);
      const alive = [...counts].map(([r, n]) => (n > 1 ? `${r} x${n}` : r));
      process.stderr.write(
        `\n!!! ${process.argv[1]}: every test ended but the process is still alive after ${graceMs / 1000} s; ` +
          `active: ${alive.join(', ') || 'nothing listed'}\n`,
      );
      process.exit(1);
    }, graceMs);
    timer.unref();
  });
}
