// The live-update state the old process writes at the pause, after the
// record (record.ts): each vCPU's registers as KVM holds them, the VM's
// irqchips, PIT and clock, and the board's devices (the console UART, PCI's
// address register, the host bridge, the memory-hotplug mailbox's
// registers). KVM's structs travel as their own bytes, checked for size; the
// rest field by field.
import { HOTPLUG_KINDS, type MemHotplugState } from '../devices/mem-hotplug.js';
import type { AssignedState, MachineState } from '../machine/handover.js';
import type { PlatformState } from '../machine/platform.js';
import { VCPU_BLOBS, type VcpuState } from '../vmm/vcpu-state.js';
import { VM_BLOBS, type VmState } from '../vmm/vm-state.js';
import { checkHeader, decodeBarAt, RECORD_MAGIC, RECORD_VERSION, type UpdateRecord } from './record.js';
import { base64, blob, Fields, hex64, intIn, RecordError, u64, type Json } from './wire.js';

const MAX_MSRS = 4096;
const SERIAL_REGS = 10;
const SERIAL_RX = 1024;
const SERIAL_WATCHED = 1024;
const CONFIG_SPACE = 256;

export function encodeState(s: MachineState): Json {
  return {
    magic: RECORD_MAGIC,
    version: RECORD_VERSION,
    vcpus: s.vcpus.map(encodeVcpu),
    vm: { irqchips: s.vm.irqchips.map(base64), pit: base64(s.vm.pit), clock: base64(s.vm.clock) },
    ...(s.assigned ? { assigned: s.assigned.map(encodeAssigned) } : {}),
    platform: {
      serial: {
        regs: s.platform.serial.regs,
        rx: base64(Uint8Array.from(s.platform.serial.rx)),
        threPending: s.platform.serial.threPending,
        line: s.platform.serial.line,
        watched: base64(Uint8Array.from(s.platform.serial.watched)),
      },
      pciAddress: s.platform.pciAddress,
      hostBridge: base64(Uint8Array.from(s.platform.hostBridge)),
      hotplug: encodeHotplug(s.platform.hotplug),
    },
  };
}

/** Checks the header, then every field, against the record it follows (one vCPU state per vCPU it made). */
export function decodeState(j: unknown, record: UpdateRecord): MachineState {
  const f = Fields.of(j, 'state');
  checkHeader(f);
  const cpus = record.machine.cpuid.length;
  const vcpus = f.list('vcpus', cpus, decodeVcpu);
  if (vcpus.length !== cpus) throw new RecordError(`state.vcpus: ${vcpus.length} vCPUs, the record made ${cpus}`);
  const vm = decodeVm(f.obj('vm'));
  const platform = decodePlatform(f.obj('platform'));
  const posted = record.api?.control.posted;
  // No event is posted once the record is written (the API refuses changes during an update): the one it awaits is the last.
  if (posted && posted.generation !== platform.hotplug.last?.generation)
    throw new RecordError(
      `state.platform.hotplug: the record awaits the ack of event ${posted.generation}, the mailbox's last is ${platform.hotplug.last?.generation ?? 'none'}`,
    );
  const assigned = f.optional('assigned', (x, k) => x.list(k, 32, (v, p) => decodeAssigned(v, p, record)));
  f.done();
  return { vcpus, vm, platform, ...(assigned ? { assigned } : {}) };
}

/**
 * The state with each interrupt's eventfd renamed by `rename` (this process's fd to its index in the
 * record's fd list on the way out, the index to the new process's fd on the way in).
 */
export function renameEventfds(s: MachineState, rename: (fd: number, bdf: string) => number): MachineState {
  if (!s.assigned) return s;
  return { ...s, assigned: s.assigned.map((a) => ({ ...a, irqs: a.irqs.map((i) => ({ ...i, eventfd: rename(i.eventfd, a.bdf) })) })) };
}

function encodeAssigned(a: AssignedState): Json {
  return {
    bdf: a.bdf,
    slot: a.slot,
    config: base64(a.config),
    bars: a.bars.map((b) => ({ bar: b.bar, address: hex64(b.address) })),
    ...(a.msix
      ? { msix: { enabled: a.msix.enabled, masked: a.msix.masked, table: base64(a.msix.table), pending: a.msix.pending.map(Number) } }
      : {}),
    intx: a.intx,
    irqs: a.irqs.map((i) => ({ gsi: i.gsi, eventfd: i.eventfd, ...(i.msi ? { msi: { ...i.msi } } : {}) })),
  };
}

function decodeAssigned(j: unknown, path: string, record: UpdateRecord): AssignedState {
  const f = Fields.of(j, path);
  const config = f.blob('config', 256, 'a config space', true);
  if (config.length !== 256 && config.length !== 4096)
    throw new RecordError(`${f.at('config')}: ${config.length} bytes, a config space is 256 or 4096`);
  const a: AssignedState = {
    bdf: f.str('bdf', 16),
    slot: f.int('slot', 1, 31),
    config,
    bars: f.list('bars', 6, decodeBarAt),
    irqs: f.list('irqs', 2048 + 1, (v, p) => {
      const i = Fields.of(v, p);
      const eventfd = i.int('eventfd', 0, record.fds.length - 1);
      if (record.fds[eventfd]!.kind !== 'eventfd')
        throw new RecordError(
          `${i.at('eventfd')}: fd ${eventfd} (${record.fds[eventfd]!.name}) is ${record.fds[eventfd]!.kind}, not eventfd`,
        );
      const msi = i.optional('msi', (x, k) => {
        const m = x.obj(k);
        const out = {
          addressLo: m.int('addressLo', 0, 0xffffffff),
          addressHi: m.int('addressHi', 0, 0xffffffff),
          data: m.int('data', 0, 0xffffffff),
        };
        m.done();
        return out;
      });
      const irq = { gsi: i.int('gsi', 0, 4095), eventfd, ...(msi ? { msi } : {}) };
      i.done();
      return irq;
    }),
    intx: false,
  };
  const msix = f.optional('msix', (x, k) => {
    const m = x.obj(k);
    const table = m.blob('table', 0, 'an MSI-X table', true);
    if (table.length % 16 || table.length > 2048 * 16)
      throw new RecordError(`${m.at('table')}: ${table.length} bytes, not a table of 16-byte vectors`);
    const pending = m.list('pending', 2048, (v, p) => intIn(v, p, 0, 1) === 1);
    if (pending.length * 16 !== table.length)
      throw new RecordError(`${m.at('pending')}: ${pending.length} pending bits for a table of ${table.length / 16} vectors`);
    const out = { enabled: m.bool('enabled'), masked: m.bool('masked'), table, pending };
    m.done();
    return out;
  });
  if (msix) a.msix = msix;
  a.intx = f.bool('intx');
  if (a.intx && msix?.enabled) throw new RecordError(`${f.at('intx')}: INTx on while MSI-X is on, which vfio-pci never runs`);
  f.done();
  return a;
}

function encodeVcpu(v: VcpuState): Json {
  return {
    regs: base64(v.regs),
    sregs: base64(v.sregs),
    xsave: base64(v.xsave),
    xcrs: base64(v.xcrs),
    debugregs: base64(v.debugregs),
    lapic: base64(v.lapic),
    events: base64(v.events),
    mpState: v.mpState,
    msrs: v.msrs.map((m) => [m.index, hex64(m.data)]),
    ...(v.tscOffset === undefined ? {} : { tscOffset: hex64(v.tscOffset) }),
    tscKhz: v.tscKhz,
  };
}

function decodeVcpu(j: unknown, path: string): VcpuState {
  const f = Fields.of(j, path);
  const v: VcpuState = {
    regs: f.blob('regs', VCPU_BLOBS.regs, 'kvm_regs'),
    sregs: f.blob('sregs', VCPU_BLOBS.sregs, 'kvm_sregs'),
    xsave: f.blob('xsave', VCPU_BLOBS.xsave, 'kvm_xsave', true),
    xcrs: f.blob('xcrs', VCPU_BLOBS.xcrs, 'kvm_xcrs'),
    debugregs: f.blob('debugregs', VCPU_BLOBS.debugregs, 'kvm_debugregs'),
    lapic: f.blob('lapic', VCPU_BLOBS.lapic, 'kvm_lapic_state'),
    events: f.blob('events', VCPU_BLOBS.events, 'kvm_vcpu_events'),
    mpState: f.int('mpState', 0, 16),
    msrs: f.list('msrs', MAX_MSRS, (m, p) => {
      if (!Array.isArray(m) || m.length !== 2) throw new RecordError(`${p}: not an [index, "0x..."] pair`);
      return { index: intIn(m[0], `${p}[0]`, 0, 0xffffffff), data: u64(m[1], `${p}[1]`) };
    }),
    tscOffset: f.optional('tscOffset', (x, k) => x.u64(k)),
    tscKhz: f.int('tscKhz', 1, 2 ** 31),
  };
  if (v.tscOffset === undefined) delete v.tscOffset;
  f.done();
  return v;
}

function decodeVm(f: Fields): VmState {
  const vm = {
    irqchips: f.list('irqchips', 3, (v, p) => blob(v, p, VM_BLOBS.irqchip, 'kvm_irqchip')),
    pit: f.blob('pit', VM_BLOBS.pit, 'kvm_pit_state2'),
    clock: f.blob('clock', VM_BLOBS.clock, 'kvm_clock_data'),
  };
  if (vm.irqchips.length !== 3) throw new RecordError(`${f.at('irqchips')}: ${vm.irqchips.length} chips, the PICs and the IOAPIC are 3`);
  f.done();
  return vm;
}

function decodePlatform(f: Fields): PlatformState {
  const s = f.obj('serial');
  const regs = s.list('regs', SERIAL_REGS, (v, p) => intIn(v, p, 0, 255));
  if (regs.length !== SERIAL_REGS) throw new RecordError(`${s.at('regs')}: ${regs.length} registers, the 16550's file is ${SERIAL_REGS}`);
  const rx = [...s.blob('rx', 0, 'the input', true)];
  if (rx.length > SERIAL_RX) throw new RecordError(`${s.at('rx')}: ${rx.length} bytes of input, the UART holds ${SERIAL_RX}`);
  const watched = [...s.blob('watched', 0, 'a line', true)];
  if (watched.length > SERIAL_WATCHED)
    throw new RecordError(`${s.at('watched')}: a console line of ${watched.length} bytes, the UART watches ${SERIAL_WATCHED}`);
  const serial = { regs, rx, threPending: s.bool('threPending'), line: s.bool('line'), watched };
  s.done();
  const out = {
    serial,
    pciAddress: f.int('pciAddress', 0, 0xffffffff),
    hostBridge: [...f.blob('hostBridge', CONFIG_SPACE, 'a config space')],
    hotplug: decodeHotplug(f.obj('hotplug')),
  };
  f.done();
  return out;
}

function encodeHotplug(h: MemHotplugState): Json {
  return {
    claimed: h.claimed,
    ...(h.last ? { last: { generation: h.last.generation, kind: h.last.kind, gpa: hex64(h.last.gpa), size: hex64(h.last.size) } } : {}),
    acked: h.acked,
    staleAcks: h.staleAcks,
  };
}

/** GEN and ACK are 32-bit registers; 0 is "none yet", so an event's generation is at least 1. */
function decodeHotplug(f: Fields): MemHotplugState {
  const last = f.optional('last', (x, k) => {
    const e = x.obj(k);
    const event = {
      generation: e.int('generation', 1, 0xffffffff),
      kind: e.oneOf('kind', HOTPLUG_KINDS),
      gpa: e.u64('gpa'),
      size: e.u64('size'),
    };
    e.done();
    if (event.size === 0n) throw new RecordError(`${e.at('size')}: 0, an event's region has bytes`);
    return event;
  });
  const h: MemHotplugState = {
    claimed: f.bool('claimed'),
    acked: f.int('acked', 0, 0xffffffff),
    staleAcks: f.int('staleAcks', 0, Number.MAX_SAFE_INTEGER),
  };
  f.done();
  if (!last && h.acked !== 0) throw new RecordError(`${f.at('acked')}: ${h.acked}, but no event was ever posted`);
  return last ? { ...h, last } : h;
}
