// 16550A UART at 0x3f8 (COM1): transmit only, enough for a guest console.
// Registers live in a SharedArrayBuffer so every vCPU thread sees one UART;
// output is line-buffered per thread so lines from two vCPUs do not interleave.
import type { BusDevice } from '../vmm/bus.js';

export const COM1 = 0x3f8;
export const SERIAL_LEN = 8;

const THR = 0, IER = 1, IIR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;
const LCR_DLAB = 0x80;
const LSR_THRE = 0x20, LSR_TEMT = 0x40;
const IIR_NO_INT = 0x01;
const MCR_LOOP = 0x10;
// Register file in shared memory: the eight registers, then DLL and DLM.
const DLL = 8, DLM = 9;
export const SERIAL_STATE_BYTES = 16;

export class Serial16550 implements BusDevice {
  private readonly regs: Uint8Array;
  private line: number[] = [];

  constructor(
    state: SharedArrayBuffer,
    private readonly sink: (bytes: Uint8Array) => void,
  ) {
    this.regs = new Uint8Array(state, 0, SERIAL_STATE_BYTES);
  }

  static newState(): SharedArrayBuffer {
    return new SharedArrayBuffer(SERIAL_STATE_BYTES);
  }

  read(offset: number, data: Uint8Array): void {
    const r = this.regs;
    const dlab = (r[LCR]! & LCR_DLAB) !== 0;
    let v: number;
    switch (offset) {
      case THR:
        v = dlab ? r[DLL]! : 0; // no input: the receive buffer is always empty
        break;
      case IER:
        v = dlab ? r[DLM]! : r[IER]!;
        break;
      case IIR:
        v = IIR_NO_INT | 0xc0; // FIFOs enabled, nothing pending
        break;
      case LSR:
        v = LSR_THRE | LSR_TEMT; // transmits instantly
        break;
      case MSR:
        v = r[MCR]! & MCR_LOOP ? (r[MCR]! & 0x0f) << 4 : 0xb0; // CTS, DSR, DCD
        break;
      default:
        v = r[offset]!;
    }
    data.fill(0);
    data[0] = v;
  }

  write(offset: number, data: Uint8Array): void {
    const r = this.regs;
    const v = data[0]!;
    const dlab = (r[LCR]! & LCR_DLAB) !== 0;
    if (offset === THR) {
      if (dlab) r[DLL] = v;
      else if (!(r[MCR]! & MCR_LOOP)) this.put(v);
    } else if (offset === IER) {
      if (dlab) r[DLM] = v;
      else r[IER] = v & 0x0f;
    } else if (offset === IIR) {
      // FCR: FIFO control, nothing to keep
    } else if (offset !== LSR && offset !== MSR) {
      r[offset] = v;
    }
  }

  private put(byte: number): void {
    this.line.push(byte);
    if (byte === 0x0a || this.line.length >= 4096) this.flush();
  }

  flush(): void {
    if (!this.line.length) return;
    this.sink(Uint8Array.from(this.line));
    this.line = [];
  }
}
