// 16550A UART at 0x3f8 (COM1): the guest console, with its interrupt (THR
// empty, received data) on ISA IRQ 4 and input from the VMM. Registers live
// in a SharedArrayBuffer so every vCPU thread (and the VMM thread, which
// feeds input) sees one UART; a small spin lock keeps a register access and
// the interrupt line it implies together. Output is line-buffered per thread
// so lines from two vCPUs do not interleave; the line the VMM watches is
// assembled in the shared state, since Linux may send one line's bytes from
// either CPU.
import type { BusDevice } from '../vmm/bus.js';

export const COM1 = 0x3f8;
export const COM1_IRQ = 4;
export const SERIAL_LEN = 8;

const THR = 0,
  IER = 1,
  IIR = 2,
  LCR = 3,
  MCR = 4,
  LSR = 5,
  MSR = 6;
const LCR_DLAB = 0x80;
const LSR_DR = 0x01,
  LSR_THRE = 0x20,
  LSR_TEMT = 0x40;
const IER_RDI = 0x01,
  IER_THRI = 0x02;
const IIR_NO_INT = 0x01,
  IIR_THRI = 0x02,
  IIR_RDI = 0x04,
  IIR_FIFO = 0xc0;
const MCR_OUT2 = 0x08,
  MCR_LOOP = 0x10;
const FCR_CLEAR_RCVR = 0x02;
// Register file: the eight registers, then DLL and DLM.
const DLL = 8,
  DLM = 9;
// Int32 words after the register file.
const W = { lock: 0, rxHead: 1, rxTail: 2, threPending: 3, line: 4, watchedLen: 5 } as const;
const WORDS = 6;
const RX_RING = 1024;
const WATCHED_MAX = 1024;
const REG_BYTES = 16;
export const SERIAL_STATE_BYTES = REG_BYTES + WORDS * 4 + RX_RING + WATCHED_MAX;

/**
 * The UART as data (a live update carries it to the next process): the
 * register file (the eight registers, DLL, DLM), input the guest has not
 * read, whether THR-empty is pending, the interrupt line's level, and the
 * start of the console line the VMM watches.
 */
export interface SerialState {
  regs: number[];
  rx: number[];
  threPending: boolean;
  line: boolean;
  watched: number[];
}

/** Sets the UART's interrupt line (an edge on the IOAPIC pin when it rises). */
export type IrqLine = (level: boolean) => void;

export class Serial16550 implements BusDevice {
  private readonly regs: Uint8Array;
  private readonly w: Int32Array;
  private readonly rx: Uint8Array;
  private readonly watched: Uint8Array;
  private line: number[] = [];

  constructor(
    state: SharedArrayBuffer,
    private readonly sink: (bytes: Uint8Array) => void,
    private readonly irq: IrqLine = () => {},
    private readonly unbuffered = false,
    /** Sees every whole line the guest prints (what the VMM watches the console for). */
    private readonly onLine?: (line: string) => void,
  ) {
    this.regs = new Uint8Array(state, 0, REG_BYTES);
    this.w = new Int32Array(state, REG_BYTES, WORDS);
    this.rx = new Uint8Array(state, REG_BYTES + WORDS * 4, RX_RING);
    this.watched = new Uint8Array(state, REG_BYTES + WORDS * 4 + RX_RING, WATCHED_MAX);
  }

  static newState(): SharedArrayBuffer {
    return new SharedArrayBuffer(SERIAL_STATE_BYTES);
  }

  /** The state in `state` as data; nothing may access the UART meanwhile (the vCPUs are paused). */
  static save(state: SharedArrayBuffer): SerialState {
    const u = new Serial16550(state, () => {});
    const head = u.w[W.rxHead]!;
    return {
      regs: [...u.regs.subarray(0, DLM + 1)],
      rx: Array.from({ length: u.rxCount() }, (_, i) => u.rx[(head + i) % RX_RING]!),
      threPending: u.w[W.threPending] !== 0,
      line: u.w[W.line] !== 0,
      watched: [...u.watched.subarray(0, u.w[W.watchedLen]!)],
    };
  }

  /** Writes `s` into a fresh state. The interrupt line's level is KVM's to restore (its irqchip state); this only remembers it. */
  static restore(state: SharedArrayBuffer, s: SerialState): void {
    if (s.regs.length !== DLM + 1 || s.rx.length > RX_RING || s.watched.length > WATCHED_MAX)
      throw new RangeError(
        `serial state does not fit this UART: ${s.regs.length} registers (${DLM + 1}), ${s.rx.length} input bytes (${RX_RING} at most), a watched line of ${s.watched.length} (${WATCHED_MAX})`,
      );
    const u = new Serial16550(state, () => {});
    u.regs.set(s.regs);
    u.rx.set(s.rx);
    u.w[W.rxHead] = 0;
    u.w[W.rxTail] = s.rx.length;
    u.w[W.threPending] = s.threPending ? 1 : 0;
    u.w[W.line] = s.line ? 1 : 0;
    u.watched.set(s.watched);
    u.w[W.watchedLen] = s.watched.length;
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    data[0] = this.locked(() => this.readReg(offset));
  }

  write(offset: number, data: Uint8Array): void {
    const v = data[0]!;
    this.locked(() => this.writeReg(offset, v));
  }

  /** Input for the guest (the VMM's stdin). Returns how many bytes fit; the rest is the caller's to retry. */
  receive(bytes: Uint8Array): number {
    return this.locked(() => {
      let n = 0;
      for (const b of bytes) {
        const tail = this.w[W.rxTail]!;
        if (tail - this.w[W.rxHead]! >= RX_RING) break;
        this.rx[tail % RX_RING] = b;
        this.w[W.rxTail] = tail + 1;
        n++;
      }
      return n;
    });
  }

  private rxCount(): number {
    return this.w[W.rxTail]! - this.w[W.rxHead]!;
  }

  private readReg(offset: number): number {
    const r = this.regs;
    const dlab = (r[LCR]! & LCR_DLAB) !== 0;
    switch (offset) {
      case THR: {
        if (dlab) return r[DLL]!;
        if (!this.rxCount()) return 0;
        const head = this.w[W.rxHead]!;
        this.w[W.rxHead] = head + 1;
        return this.rx[head % RX_RING]!;
      }
      case IER:
        return dlab ? r[DLM]! : r[IER]!;
      case IIR: {
        const id = this.pending();
        // Reading IIR while it shows THR empty acknowledges that interrupt.
        if (id === IIR_THRI) this.w[W.threPending] = 0;
        return id | IIR_FIFO;
      }
      case LSR:
        return LSR_THRE | LSR_TEMT | (this.rxCount() ? LSR_DR : 0); // transmits instantly
      case MSR:
        return r[MCR]! & MCR_LOOP ? (r[MCR]! & 0x0f) << 4 : 0xb0; // CTS, DSR, DCD
      default:
        return r[offset]!;
    }
  }

  private writeReg(offset: number, v: number): void {
    const r = this.regs;
    const dlab = (r[LCR]! & LCR_DLAB) !== 0;
    if (offset === THR) {
      if (dlab) r[DLL] = v;
      else {
        if (!(r[MCR]! & MCR_LOOP)) this.put(v);
        this.w[W.threPending] = 1; // sent at once: THR is empty again
      }
    } else if (offset === IER) {
      if (dlab) r[DLM] = v;
      else {
        // Enabling the THR-empty interrupt while THR is empty raises it, as on the real part.
        if (v & IER_THRI && !(r[IER]! & IER_THRI)) this.w[W.threPending] = 1;
        r[IER] = v & 0x0f;
      }
    } else if (offset === IIR) {
      // FCR: only "clear the receive FIFO" has an effect here (the 8250 driver uses it at open).
      if (v & FCR_CLEAR_RCVR) this.w[W.rxHead] = this.w[W.rxTail]!;
    } else if (offset !== LSR && offset !== MSR) {
      r[offset] = v;
    }
  }

  /** The highest-priority pending interrupt's IIR id, or IIR_NO_INT. */
  private pending(): number {
    const ier = this.regs[IER]!;
    if (ier & IER_RDI && this.rxCount()) return IIR_RDI;
    if (ier & IER_THRI && this.w[W.threPending]) return IIR_THRI;
    return IIR_NO_INT;
  }

  /** Runs `f` under the UART's lock, then moves the interrupt line to match the state (OUT2 gates it, as on a PC). */
  private locked<T>(f: () => T): T {
    while (Atomics.compareExchange(this.w, W.lock, 0, 1) !== 0);
    try {
      const out = f();
      const level = this.pending() !== IIR_NO_INT && (this.regs[MCR]! & MCR_OUT2) !== 0 ? 1 : 0;
      if (level !== this.w[W.line]) {
        this.w[W.line] = level;
        this.irq(level === 1);
      }
      return out;
    } finally {
      Atomics.store(this.w, W.lock, 0);
    }
  }

  private put(byte: number): void {
    if (this.onLine) {
      const n = this.w[W.watchedLen]!;
      if (byte === 0x0a) {
        this.w[W.watchedLen] = 0;
        this.onLine(Buffer.from(this.watched.subarray(0, n)).toString('latin1').replace(/\r$/, ''));
      } else if (n < WATCHED_MAX) {
        this.watched[n] = byte;
        this.w[W.watchedLen] = n + 1;
      }
    }
    this.line.push(byte);
    if (this.unbuffered || byte === 0x0a || this.line.length >= 4096) this.flush();
  }

  flush(): void {
    if (!this.line.length) return;
    this.sink(Uint8Array.from(this.line));
    this.line = [];
  }
}
