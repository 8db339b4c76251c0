// The vCPU run loop: KVM_RUN, then dispatch the exit to the port-I/O or MMIO
// bus, until the VM is told to stop. Runs on the vCPU's own thread; the only
// shared state is `control` (a SharedArrayBuffer every vCPU and the VMM see).
import { ioctl, ioctlFast, mmapFd, MAP_SHARED, type MappedMemory } from '../sys/libc.js';
import { ERRNO, errnoName } from '../sys/errors.js';
import * as K from '../sys/kvm.js';
import type { Bus } from './bus.js';
import { ExitProfile, exitProfileOn } from './exit-profile.js';

/** Int32 slots of the control block. `go`: the vCPU threads, started while the machine is still being
 * assembled, enter KVM_RUN once it is 1. `pause`: while 1, every vCPU waits on it outside KVM_RUN (the VMM
 * kicks them out to pause). Two words per vCPU follow (vcpuWords). */
export const CONTROL = { stop: 0, code: 1, reason: 2, vcpu: 3, go: 4, pause: 5, length: 6 } as const;
/** What a vCPU's thread is doing, in its state word: written by the thread, read by the VMM. */
export const VCPU_STATE = { loading: 0, waiting: 1, running: 2, paused: 3, ended: 4 } as const;
export const VCPU_STATE_NAMES = ['loading', 'waiting', 'running', 'paused', 'ended'] as const;
export type VcpuStateName = (typeof VCPU_STATE_NAMES)[number];

/** vCPU i's words of the control block: released (see vcpu-thread.ts) and its state (VCPU_STATE). */
export function vcpuWords(i: number): { released: number; state: number } {
  return { released: CONTROL.length + 2 * i, state: CONTROL.length + 2 * i + 1 };
}

/** Bytes of the control block of a machine with `vcpus` vCPUs. */
export function controlBytes(vcpus: number): number {
  return (CONTROL.length + 2 * vcpus) * 4;
}
/** Values of CONTROL.go: threads wait at `wait`; `closed` means the machine was closed before it ran, its vCPU fds gone. */
export const GO = { wait: 0, run: 1, closed: 2 } as const;
export const STOP_REASON = { none: 0, guestExit: 1, guestFault: 2, host: 3, guestReset: 4, guestPanic: 5, guestPoweroff: 6 } as const;

export type RunEnd = { kind: 'stopped' } | { kind: 'fault'; report: string };

export class VcpuRunner {
  private readonly view: DataView;
  private readonly u8: Uint8Array;
  private dataAt = -1;
  private dataLen = 0;
  private data: Uint8Array = new Uint8Array(0);
  /** Exits handled, for benchmarks and reports. */
  exits = 0;
  readonly profile = exitProfileOn ? new ExitProfile() : undefined;
  /** Runs as the vCPU settles into a pause, before it says so (its thread pushes out buffered console output). */
  onHold: () => void = () => {};

  private constructor(
    readonly fd: number,
    readonly index: number,
    private readonly run: MappedMemory,
    private readonly pio: Bus,
    private readonly mmio: Bus,
    private readonly control: Int32Array,
  ) {
    this.u8 = run.bytes;
    this.view = new DataView(this.u8.buffer, this.u8.byteOffset, this.u8.byteLength);
  }

  /** The loop of vCPU `fd` over these buses, with its own mapping of kvm_run (unmapped by close). */
  static open(fd: number, index: number, mmapSize: number, pio: Bus, mmio: Bus, control: Int32Array): VcpuRunner {
    return new VcpuRunner(fd, index, mmapFd(mmapSize, MAP_SHARED, fd, 0n, `vcpu${index} kvm_run`), pio, mmio, control);
  }

  /** Claims the stop for this vCPU; false if someone else stopped the VM first. */
  requestStop(reason: number, code = 0): boolean {
    if (Atomics.compareExchange(this.control, CONTROL.stop, 0, 1) !== 0) return false;
    Atomics.store(this.control, CONTROL.code, code);
    Atomics.store(this.control, CONTROL.reason, reason);
    Atomics.store(this.control, CONTROL.vcpu, this.index);
    return true;
  }

  /** Runs until the VM is stopped (by any vCPU or the VMM) or this vCPU faults; waits while it is paused. */
  loop(): RunEnd {
    this.setState(VCPU_STATE.running);
    while (Atomics.load(this.control, CONTROL.stop) === 0) {
      if (Atomics.load(this.control, CONTROL.pause) !== 0) {
        this.hold();
        continue;
      }
      const fault = this.step();
      if (fault) {
        this.requestStop(STOP_REASON.guestFault);
        return { kind: 'fault', report: fault };
      }
    }
    return { kind: 'stopped' };
  }

  /** Paused: out of KVM_RUN until resumed or stopped (stop() notifies the pause word too). */
  private hold(): void {
    this.onHold();
    this.setState(VCPU_STATE.paused);
    while (Atomics.load(this.control, CONTROL.pause) !== 0 && Atomics.load(this.control, CONTROL.stop) === 0)
      Atomics.wait(this.control, CONTROL.pause, 1, 1000);
    this.setState(VCPU_STATE.running);
  }

  setState(state: number): void {
    const w = vcpuWords(this.index).state;
    Atomics.store(this.control, w, state);
    Atomics.notify(this.control, w);
  }

  /** One KVM_RUN and its exit. Returns a fault report when the guest cannot go on. */
  step(): string | undefined {
    const r = ioctlFast(this.fd, K.KVM_RUN, 0);
    if (r < 0) {
      if (r === -ERRNO.EINTR || r === -ERRNO.EAGAIN) {
        this.u8[K.kvm_run.immediate_exit] = 0;
        return undefined;
      }
      return `vCPU ${this.index}: KVM_RUN failed: ${errnoName(-r)}`;
    }
    this.exits++;
    const reason = this.view.getUint32(K.kvm_run.exit_reason, true);
    if (reason === K.KVM_EXIT_IO) return this.io();
    if (reason === K.KVM_EXIT_MMIO) return this.mmioExit();
    if (reason === K.KVM_EXIT_INTR) return undefined;
    return this.report(reason);
  }

  private io(): undefined {
    const v = this.view;
    const IO = K.kvm_run.io;
    const size = v.getUint8(IO.size);
    const port = v.getUint16(IO.port, true);
    const count = v.getUint32(IO.count, true);
    const off = Number(v.getBigUint64(IO.data_offset, true));
    const out = v.getUint8(IO.direction) === K.KVM_EXIT_IO_OUT;
    const t0 = this.profile ? process.hrtime.bigint() : 0n;
    for (let i = 0; i < count; i++) {
      const data = this.slice(off + i * size, size);
      if (out) this.pio.write(port, data);
      else this.pio.read(port, data);
    }
    this.profile?.record('pio', port, size, out, Number(process.hrtime.bigint() - t0));
    return undefined;
  }

  private mmioExit(): undefined {
    const M = K.kvm_run.mmio;
    const addr = Number(this.view.getBigUint64(M.phys_addr, true));
    const data = this.slice(M.data, this.view.getUint32(M.len, true));
    const write = this.view.getUint8(M.is_write) !== 0;
    const t0 = this.profile ? process.hrtime.bigint() : 0n;
    if (write) this.mmio.write(addr, data);
    else this.mmio.read(addr, data);
    this.profile?.record('mmio', addr, data.length, write, Number(process.hrtime.bigint() - t0));
    return undefined;
  }

  /** The access bytes inside kvm_run; the same view is reused while the offset and size repeat. */
  private slice(at: number, len: number): Uint8Array {
    if (at !== this.dataAt || len !== this.dataLen) {
      this.data = this.u8.subarray(at, at + len);
      this.dataAt = at;
      this.dataLen = len;
    }
    return this.data;
  }

  private report(reason: number): string {
    const name = K.EXIT_REASON_NAMES[reason] ?? `exit reason ${reason}`;
    const v = this.view;
    let what: string;
    switch (reason) {
      case K.KVM_EXIT_SHUTDOWN:
        what = 'guest triple fault (an exception with no handler, e.g. a page fault, #GP or #UD)';
        break;
      case K.KVM_EXIT_FAIL_ENTRY:
        what = `VM entry failed, hardware reason 0x${v.getBigUint64(K.kvm_run.fail_entry.hardware_entry_failure_reason, true).toString(16)}`;
        break;
      case K.KVM_EXIT_INTERNAL_ERROR: {
        const sub = v.getUint32(K.kvm_run.internal.suberror, true);
        what = sub === K.KVM_INTERNAL_ERROR_EMULATION ? 'KVM could not emulate an instruction' : `KVM internal error, suberror ${sub}`;
        break;
      }
      case K.KVM_EXIT_SYSTEM_EVENT:
        what = `guest system event ${v.getUint32(K.kvm_run.system_event.type, true)} (shutdown, reset or crash)`;
        break;
      case K.KVM_EXIT_HLT:
        what = 'guest halted with interrupts off';
        break;
      default:
        what = 'exit Pinion does not handle';
    }
    return `vCPU ${this.index}: ${what} (${name}) ${this.registers(reason)}`;
  }

  private registers(reason: number): string {
    try {
      const b = Buffer.alloc(K.layout.kvm_regs.sizeof);
      ioctl(this.fd, K.KVM_GET_REGS, b, 'KVM_GET_REGS');
      const r = K.decodeRegs(b);
      const s = Buffer.alloc(K.kvm_sregs.sizeof);
      ioctl(this.fd, K.KVM_GET_SREGS, s, 'KVM_GET_SREGS');
      const h = (x: bigint): string => `0x${x.toString(16)}`;
      // AMD SVM re-initialises a vCPU on shutdown (svm.c shutdown_interception): paging is then off.
      if (reason === K.KVM_EXIT_SHUTDOWN && !(s.readBigUInt64LE(K.kvm_sregs.cr0) & 0x80000000n))
        return '(AMD SVM re-initialises a vCPU on shutdown, so the faulting RIP is lost)';
      return `at RIP ${h(r.rip)} RSP ${h(r.rsp)} RFLAGS ${h(r.rflags)} CR0 ${h(s.readBigUInt64LE(K.kvm_sregs.cr0))} CR2 ${h(s.readBigUInt64LE(K.kvm_sregs.cr2))} CR3 ${h(s.readBigUInt64LE(K.kvm_sregs.cr3))}`;
    } catch (e) {
      return `(registers unreadable: ${(e as Error).message})`;
    }
  }

  close(): void {
    this.run.unmap();
  }
}
