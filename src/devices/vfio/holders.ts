// Who holds a device node open: the pids a "device in use" error names.
import { readdirSync, readlinkSync } from 'node:fs';

export function holders(...paths: string[]): string {
  const pids: number[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    if (Number(pid) === process.pid) continue;
    try {
      if (readdirSync(`/proc/${pid}/fd`).some((fd) => paths.includes(safeLink(`/proc/${pid}/fd/${fd}`)))) pids.push(Number(pid));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids.length ? ` (pid ${pids.join(', ')})` : '';
}

function safeLink(p: string): string {
  try {
    return readlinkSync(p);
  } catch {
    return '';
  }
}
