// Starting the new process of a live update: by default the same node and
// the same bundle as this one, or COMMAND (ctl update --to), with `run
// --incoming 3` added. The fds go by exec inheritance: entry 3 of the spawn's
// stdio array is a socketpair (the channel), entries 4 on are this process's
// fds in the record's order, which libuv dup2()s into place in the child
// (clearing close-on-exec); stdin, stdout and stderr are shared, so the
// guest console and the messages go where this process's go.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { Channel } from './channel.js';
import { CHANNEL_FD } from './fds.js';
import type { Peer } from './outgoing.js';

/**
 * The new process's command. `to` is split at spaces, not run by a shell
 * (the control API is the VMM user's alone, mode 0600, and asks for nothing
 * that user could not run anyway).
 */
export function newProcessCommand(to?: string): string[] {
  const base = to?.trim() ? to.trim().split(/\s+/) : [process.execPath, ...process.execArgv, process.argv[1] ?? ''];
  return [...base, 'run', '--incoming', String(CHANNEL_FD)];
}

const EXIT_GRACE_MS = 500;

export function spawnPeer(command: readonly string[], fds: readonly number[]): Promise<Peer> {
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawn(command[0]!, command.slice(1), { stdio: ['inherit', 'inherit', 'inherit', 'pipe', ...fds] });
    } catch (e) {
      return reject(new Error(`cannot start ${command.join(' ')}: ${(e as Error).message}`));
    }
    child.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`cannot start ${command[0]}: ${e.code ?? e.message}`)));
    child.once('spawn', () => {
      const pid = child.pid!;
      let end: string | undefined;
      const gone = new Promise<void>((r) =>
        child.once('exit', (code, signal) => {
          end = `the new process (pid ${pid}) ${signal ? `was killed by ${signal}` : `exited with status ${code}`}`;
          channel.fail(end);
          r();
        }),
      );
      // A channel that breaks means the process is ending: its exit says how, when it comes soon.
      const explain = async (why: string): Promise<string> => {
        await Promise.race([gone, new Promise((r) => setTimeout(r, EXIT_GRACE_MS))]);
        return end ?? why;
      };
      const channel = new Channel(child.stdio[CHANNEL_FD] as Socket, `the new process (pid ${pid})`, explain);
      resolve({
        pid,
        channel,
        get alive() {
          return child.exitCode === null && child.signalCode === null;
        },
        kill: async () => {
          const alive = child.exitCode === null && child.signalCode === null;
          if (alive) child.kill('SIGKILL');
          await gone;
          return alive;
        },
        detach: () => {
          channel.close();
          child.unref();
        },
      });
    });
  });
}
