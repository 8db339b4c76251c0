import t from 'tap';
import { Worker } from 'node:worker_threads';
import { Bus } from '../../src/vmm/bus.js';
import { newRpcSlot, serveRpc } from '../../src/vmm/bus-rpc.js';

const RPC = new URL('../../src/vmm/bus-rpc.js', import.meta.url).href;

t.test('a vCPU thread reaches a VMM-thread device through its slot, reads and writes', async (t) => {
  const pio = new Bus('pio');
  const mmio = new Bus('mmio');
  const writes: string[] = [];
  let reg = 0;
  pio.register(
    0xcf8,
    4,
    {
      read: (_o, d) => new DataView(d.buffer, d.byteOffset).setUint32(0, reg, true),
      write: (_o, d) => void (reg = new DataView(d.buffer, d.byteOffset).getUint32(0, true)),
    },
    'cfg',
  );
  mmio.register(0x1_0000_0000 + 0x1000, 8, { read: (o, d) => d.fill(o), write: (o, d) => void writes.push(`${o}:${[...d]}`) }, 'high');
  const slot = newRpcSlot();
  const w = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     import(workerData.rpc).then(({ RpcClient }) => {
       const c = new RpcClient(workerData.slot, () => parentPort.postMessage('io'));
       const pio = c.device('pio'), mmio = c.device('mmio');
       pio.write(0xcf8, Uint8Array.of(0x78, 0x56, 0x34, 0x12));
       const d = new Uint8Array(4); pio.read(0xcf8, d);
       mmio.write(0x100001003, Uint8Array.of(9, 8));
       const m = new Uint8Array(2); mmio.read(0x100001005, m);
       const none = new Uint8Array(2); pio.read(0x60, none);
       parentPort.postMessage({ d: [...d], m: [...m], none: [...none] });
     });`,
    { eval: true, workerData: { slot, rpc: RPC } },
  );
  const result = await new Promise<{ d: number[]; m: number[]; none: number[] }>((resolve, reject) => {
    w.on('message', (msg) => (msg === 'io' ? serveRpc(slot, pio, mmio) : resolve(msg)));
    w.on('error', reject);
  });
  await w.terminate();
  t.same(result.d, [0x78, 0x56, 0x34, 0x12], 'the 32-bit register round-trips');
  t.equal(reg, 0x12345678);
  t.same(writes, ['3:9,8'], 'an MMIO write above 4 GiB lands at the right offset');
  t.same(result.m, [5, 5]);
  t.same(result.none, [0xff, 0xff], 'unclaimed on the VMM thread: all ones');
});
