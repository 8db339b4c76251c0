// Compiled entry points of the scripts that run inside L1.
import { fileURLToPath } from 'node:url';

export function rigReportScript(): string {
  return fileURLToPath(new URL('./report.js', import.meta.url));
}

export function rigDemoScript(): string {
  return fileURLToPath(new URL('./demo.js', import.meta.url));
}
