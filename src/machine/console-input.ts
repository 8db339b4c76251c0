// What is typed at the guest console (COM1), fed to the UART on the VMM
// thread; what it cannot take yet is retried as the guest reads.
import type { Serial16550 } from '../devices/serial.js';
import { serialOn, type DeviceSpec } from './devices.js';

const RETRY_MS = 10;

export class ConsoleInput {
  private uart: Serial16550 | undefined;
  private backlog: Uint8Array[] = [];
  private retry: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly spec: Extract<DeviceSpec, { kind: 'serial' }> | undefined) {}

  input(bytes: Uint8Array): void {
    if (!this.spec || this.closed) return;
    this.uart ??= serialOn(this.spec);
    this.backlog.push(bytes);
    this.feed();
  }

  private feed(): void {
    while (this.backlog.length) {
      const next = this.backlog[0]!;
      const n = this.uart!.receive(next);
      if (n < next.length) {
        this.backlog[0] = next.subarray(n);
        this.retry ??= setTimeout(() => {
          this.retry = undefined;
          this.feed();
        }, RETRY_MS);
        return;
      }
      this.backlog.shift();
    }
  }

  /** No more retries: the machine is going away. */
  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    this.retry = undefined;
    this.backlog = [];
  }
}
