// What Pinion holds of an assigned function, as a live update carries it to
// the next process (the device and VFIO keep the rest: its registers, its
// MSI-X vectors, the eventfds they trigger).
import type { MsiMessage } from '../../vmm/irq.js';

/** Where the guest placed a BAR. */
export interface BarAt {
  bar: number;
  address: bigint;
}

export interface AssignedState {
  bdf: string;
  slot: number;
  /** The device's own config space at the pause (Pinion's view of it is the rest of this state), for checks: 256 or 4096 bytes. */
  config: Buffer;
  /** Where the guest placed each BAR. */
  bars: BarAt[];
  /** The MSI-X table as the guest wrote it (16 bytes a vector), the function's enable and mask bits, and the pending bits Pinion holds. */
  msix?: { enabled: boolean; masked: boolean; table: Buffer; pending: boolean[] };
  /** Each MSI-X vector's GSI, its message, and its eventfd (this process's fd, or an index of the record's fd list on the way). */
  irqs: { gsi: number; eventfd: number; msi?: MsiMessage }[];
  /** INTx on (MSI and MSI-X off): the next process takes the line with eventfds of its own. */
  intx: boolean;
}
