// pinion run --incoming FD: the new process of a live update. The old
// process started it with the channel at FD and the VM's fds after it; the
// VM comes from there (src/update/incoming.ts), the control API goes on on
// the same socket, and from then on this is `pinion run`: the guest's
// console where the old process had it, the exit status the guest's.
import { MachineControl, API_STOP, UPDATE_LOST, UPDATE_STOP } from '../api/vm-control.js';
import { route } from '../api/routes.js';
import { ApiServer } from '../api/server.js';
import { receive } from '../update/incoming.js';
import { UsageError } from './args.js';
import { exitStatus } from './exit-status.js';

export async function incomingCommand(argv: string[]): Promise<number> {
  const [fd, ...rest] = argv;
  if (!fd || !/^\d+$/.test(fd) || rest.length)
    throw new UsageError('pinion run --incoming FD is started by a running Pinion (pinion ctl PATH update), not by hand');
  const inc = await receive(Number(fd));
  const m = inc.machine;
  let control: MachineControl | undefined;
  let server: ApiServer | undefined;
  try {
    if (inc.api) {
      const c = (control = new MachineControl(m, inc.api.control));
      server = await ApiServer.adopt(inc.api.path, inc.api.fd, (method, url, body) => route(c, method, url, body));
      c.attach(server);
    }
    console.error(
      `pinion: VM taken over from pid ${inc.record.from.pid} (live update)${inc.api ? `; control API on ${inc.api.path}` : ''}`,
    );
    const onSignal = (sig: NodeJS.Signals): void => m.stop(`signal ${sig}`);
    process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
    const linux = m.config.linux !== undefined;
    const onInput = (d: Buffer): void => m.input(d);
    if (linux) process.stdin.on('data', onInput);
    const r = await inc.run;
    if (linux) process.stdin.off('data', onInput).pause();
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
    return exitStatus(r, { api: API_STOP, update: UPDATE_STOP, lost: UPDATE_LOST });
  } finally {
    await server?.close();
    m.close();
    control?.close();
  }
}
