// Runs the built CLI as a user would, in a process of its own, for tests that
// start it many times: through `env -u NODE_OPTIONS`, as the test runner puts
// its loader in every child's NODE_OPTIONS, which triples a start.
import { spawn } from 'node:child_process';
import { CLI } from './rig.js';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function cli(args: string[], env: Record<string, string> = {}, script = CLI): Promise<CliResult> {
  return new Promise((resolve) => {
    const p = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, script, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
      timeout: 30_000,
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
