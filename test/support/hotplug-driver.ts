// A guest driver of the memory-hotplug mailbox, simulated on its ports as
// the test guest polls it: it claims the mailbox, polls every ms, reads an
// event whole (GEN, the fields, GEN again) and acks it when `answer` says so.
import { MEM_HOTPLUG_ID, MEM_HOTPLUG_REG as R, type MemHotplug } from '../../src/devices/mem-hotplug.js';
import { le, putLe } from '../../src/vmm/bus.js';

const KINDS = ['none', 'added', 'remove'] as const;

export class HotplugDriver {
  seen: { kind: number; gpa: number; size: number }[] = [];
  answer: (kind: number) => boolean = () => true;
  private last = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly dev: MemHotplug) {
    this.put(R.ID, MEM_HOTPLUG_ID);
    this.timer = setInterval(() => this.poll(), 1);
  }

  /** What it saw, as `added 0x40000000+0x100000`. */
  seenText(): string[] {
    return this.seen.map((e) => `${KINDS[e.kind]} 0x${e.gpa.toString(16)}+0x${e.size.toString(16)}`);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  put(reg: number, v: number): void {
    const b = new Uint8Array(4);
    putLe(b, v);
    this.dev.write(reg, b);
  }

  private get(reg: number): number {
    const b = new Uint8Array(4);
    this.dev.read(reg, b);
    return le(b) >>> 0;
  }

  private poll(): void {
    const gen = this.get(R.GEN);
    if (gen === this.last) return;
    const e = { kind: this.get(R.KIND), gpa: this.get(R.GPA_LO), size: this.get(R.SIZE_LO) };
    if (this.get(R.GEN) !== gen) return; // the VMM posted meanwhile: next poll
    this.last = gen;
    this.seen.push(e);
    if (this.answer(e.kind)) this.put(R.ACK, gen);
  }
}
