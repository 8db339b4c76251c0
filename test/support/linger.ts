// A test file whose tests are all done but whose process stays alive (a
// timer, socket or child left behind) would sit until the runner's per-file
// timeout. Once tap's root test ends, give the event loop a grace period,
// then name what keeps it alive and fail the file.
import t from 'tap';

const GRACE_MS = 20_000;

export function failIfLingering(graceMs = GRACE_MS): void {
  t.teardown(() => {
    const timer = setTimeout(() => {
      const alive = process.getActiveResourcesInfo().filter((r) => r !== 'Timeout');
      process.stderr.write(
        `\n!!! ${process.argv[1]}: every test ended but the process is still alive after ${graceMs / 1000} s; ` +
          `keeping it alive: ${alive.join(', ') || 'timers only'}\n`,
      );
      process.exit(1);
    }, graceMs);
    timer.unref();
  });
}
