// QEMU's view of a stalled L1, through its QMP socket: human monitor
// commands (info cpus, info registers, info lapic) as text. Best effort with
// a deadline: a report must never wait on a QEMU that does not answer.
import { connect } from 'node:net';

export async function monitorCommands(socket: string, commands: string[], timeoutMs = 5000): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  await new Promise<void>((resolve) => {
    const s = connect(socket);
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    let buf = '';
    let next = -1; // -1: waiting for the greeting's capabilities answer
    const send = (cmd: object) => s.write(JSON.stringify(cmd) + '\n');
    const ask = () => {
      if (next >= commands.length) return done();
      send({ execute: 'human-monitor-command', arguments: { 'command-line': commands[next] } });
    };
    s.on('error', done);
    s.on('close', done);
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let msg: { QMP?: unknown; return?: unknown; error?: { desc?: string } };
        try {
          msg = JSON.parse(line);
        } catch {
          continue;
        }
        if (msg.QMP) {
          send({ execute: 'qmp_capabilities' });
        } else if ('return' in msg || msg.error) {
          if (next >= 0)
            out.set(commands[next]!, typeof msg.return === 'string' ? msg.return : `error: ${msg.error?.desc ?? JSON.stringify(msg)}`);
          next++;
          ask();
        }
      }
    });
  });
  return out;
}
