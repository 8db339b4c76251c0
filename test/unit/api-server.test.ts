// The control API's HTTP layer over a real Unix socket in a temp dir, with a
// VmControl that has no kernel behind it: routes, refusals as one line, the
// limits (body, time, connections, rate, queue), clients that leave or flood,
// the socket's mode and a stale socket left by a VMM that died.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { route } from '../../src/api/routes.js';
import { ApiServer, claimSocketPath, type ApiLimits } from '../../src/api/server.js';
import { call } from '../../src/cli/ctl.js';
import { FakeVmControl } from '../support/fake-vm-control.js';

const dir = mkdtempSync(join(tmpdir(), 'pinion-api-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

async function serve(limits: Partial<ApiLimits> = {}): Promise<{ api: ApiServer; vm: FakeVmControl; path: string }> {
  const vm = new FakeVmControl();
  const path = join(dir, `api-${n++}.sock`);
  const api = await ApiServer.listen(path, (m, u, b) => route(vm, m, u, b), limits);
  return { api, vm, path };
}

/** Raw bytes to the socket; resolves with all it answered once it closes (or after `ms`). */
function raw(path: string, send: (s: Socket) => void, ms = 3000): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(path);
    let got = '';
    const timer = setTimeout(() => (s.destroy(), resolve(got)), ms);
    s.on('data', (d) => (got += d.toString()));
    s.on('close', () => (clearTimeout(timer), resolve(got)));
    s.on('error', () => undefined);
    s.on('connect', () => send(s));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('the verbs answer JSON; the socket is 0600 and removed on close', async (t) => {
  const { api, vm, path } = await serve();
  t.equal(statSync(path).mode & 0o777, 0o600, 'mode 0600');
  const info = await call(path, 'GET', '/api/v1/vm.info');
  t.equal(info.status, 200);
  t.match(info.body, { state: 'running', vcpus: [{ index: 0 }, { index: 1 }] });
  t.match((await call(path, 'GET', '/api/v1/vm.memory')).body, { regions: [{ name: 'ram-low', gpa: '0x0', size: 64 << 20 }] });
  t.match((await call(path, 'GET', '/api/v1/vm.dma')).body, { assigned: true, entries: { used: 1 } });
  t.match((await call(path, 'GET', '/api/v1/vm.devices')).body, { devices: [{ bdf: '0000:00:04.0' }] });
  t.match((await call(path, 'GET', '/api/v1/vmm.ping')).body, { pinion: 'ok' });
  t.match((await call(path, 'PUT', '/api/v1/vm.pause')).body, { state: 'paused' });
  t.match((await call(path, 'PUT', '/api/v1/vm.resume', {})).body, { state: 'running' });
  const add = await call(path, 'PUT', '/api/v1/vm.add-ram', { gpa: '0x40000000', size: '16M' });
  t.equal(add.status, 200);
  t.match(add.body, {
    done: /added 16 MiB of memfd RAM/,
    guest: { told: false, acknowledged: false, events: [], note: /^not told: no guest driver claimed the memory-hotplug mailbox/ },
    memory: {
      regions: [
        { name: 'ram-low', guest: 'boot' },
        { gpa: '0x40000000', origin: 'api', guest: 'not told' },
      ],
      hotplug: { port: '0x5f0', claimed: false },
    },
  });
  t.match((await call(path, 'PUT', '/api/v1/vm.stop')).body, { state: 'stopping' });
  t.same(
    vm.calls.filter((c) => ['add-ram', 'stop'].includes(c)),
    ['add-ram', 'stop'],
  );
  await api.close();
  t.notOk(existsSync(path), 'socket removed');
});

t.test('bad requests get a 4xx with one line and change nothing', async (t) => {
  const { api, vm, path } = await serve();
  const cases: [string, string, unknown, number, RegExp][] = [
    ['PUT', '/api/v1/vm.add-ram', '{"gpa": 0x1', 400, /the body is not JSON/],
    ['PUT', '/api/v1/vm.add-ram', '', 400, /vm.add-ram needs a JSON body with gpa, size, backend/],
    ['GET', '/api/v1/vm.frobnicate', undefined, 404, /unknown verb 'vm.frobnicate'; the API has vmm.ping, vm.info/],
    ['GET', '/api/v1/__proto__', undefined, 404, /unknown verb/],
    ['GET', '/metrics', undefined, 404, /the API is under \/api\/v1\//],
    ['GET', '/api/v1/vm.pause', undefined, 405, /vm.pause takes PUT, not GET/],
    ['PUT', '/api/v1/vm.add-ram', { gpa: '0x40000800', size: '16M' }, 400, /gpa 0x40000800 is not a multiple of the 4096-byte page size/],
    ['PUT', '/api/v1/vm.add-ram', { gpa: '0x2000000', size: '64M' }, 409, /overlaps ram-low \[0x0, 0x4000000\)/],
    ['PUT', '/api/v1/vm.add-ram', { gpa: '0xbff00000', size: '2M' }, 409, /reaches into the PCI hole/],
    ['PUT', '/api/v1/vm.move-ram', { gpa: '0x1000', to: '0x0' }, 404, /no region starts at 0x1000/],
  ];
  for (const [method, url, body, status, msg] of cases) {
    const text = typeof body === 'string' ? body : body === undefined ? '' : JSON.stringify(body);
    const r = await new Promise<{ status: number; body: string }>((resolve) => {
      let got = '';
      void raw(path, (s) =>
        s.end(`${method} ${url} HTTP/1.1\r\nHost: x\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`),
      ).then((g) => {
        got = g;
        resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(got)?.[1]), body: got.split('\r\n\r\n')[1] ?? '' });
      });
    });
    t.equal(r.status, status, `${method} ${url} ${text}: ${status}`);
    t.match(JSON.parse(r.body), { error: msg });
    t.equal(r.body.trim().split('\n').length, 1, 'one line');
  }
  // The planner's refusal from the VM side (a change beyond the DMA budget) is a 4xx too.
  const { ApiError } = await import('../../src/api/errors.js');
  vm.failNext = new ApiError(409, 'vm.add-ram: the change needs 80 MiB over the 64 MiB budget; the DMA map is unchanged');
  const over = await call(path, 'PUT', '/api/v1/vm.add-ram', { gpa: '0x40000000', size: '16M' });
  t.equal(over.status, 409);
  t.match(over.body, { error: /over the 64 MiB budget/ });
  vm.failNext = new Error('KVM_SET_USER_MEMORY_REGION(slot 2) failed: EEXIST (iova 0x40000000, size 0x1000000)');
  const kernel = await call(path, 'PUT', '/api/v1/vm.add-ram', { gpa: '0x40000000', size: '16M' });
  t.equal(kernel.status, 500, 'an unexpected failure is a 500 with its message');
  t.match(kernel.body, { error: /EEXIST \(iova 0x40000000, size 0x1000000\)/ });
  t.same(
    vm.map.map((r) => r.name),
    ['ram-low'],
    'the map is unchanged',
  );
  t.match((await call(path, 'GET', '/api/v1/vm.info')).body, { state: 'running' }, 'and the VM still answers');
  await api.close();
});

t.test('a body over the limit gets a 413, whether declared or streamed; headers over theirs a 431', async (t) => {
  const { api, vm, path } = await serve({ maxBodyBytes: 1024 });
  const declared = await raw(path, (s) => s.write(`PUT /api/v1/vm.add-ram HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{`));
  t.match(declared, /^HTTP\/1\.1 413 /);
  t.match(declared, /over the 1024-byte limit/);
  const streamed = await raw(path, (s) => {
    s.write(`PUT /api/v1/vm.add-ram HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n`);
    for (let i = 0; i < 8; i++) s.write(`200\r\n${'x'.repeat(0x200)}\r\n`);
  });
  t.match(streamed, /^HTTP\/1\.1 413 /);
  const headers = await raw(path, (s) => s.write(`GET /api/v1/vm.info HTTP/1.1\r\nX-Pad: ${'a'.repeat(10000)}\r\n\r\n`));
  t.match(headers, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
  t.match(headers, /"error":"bad HTTP request: headers over 8192 bytes"/);
  t.notOk(vm.calls.includes('add-ram'), 'nothing ran');
  t.equal(api.waiting, 0);
  await api.close();
});

t.test('a client that leaves mid-request or sends its headers too slowly holds nothing', async (t) => {
  const { api, vm, path } = await serve({ headersTimeoutMs: 300, requestTimeoutMs: 600 });
  await raw(path, (s) => {
    s.write(`PUT /api/v1/vm.add-ram HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"gpa": "0x4`);
    setTimeout(() => s.destroy(), 20);
  });
  await sleep(50);
  t.equal(api.waiting, 0, 'the half request is dropped');
  t.same(vm.calls, [], 'and never reached the VM');
  const t0 = Date.now();
  const slow = await raw(path, (s) => s.write('GET /api/v1/vm.info HTTP/1.1\r\nHo'), 5000);
  t.ok(Date.now() - t0 < 3000, `closed after ${Date.now() - t0} ms`);
  t.match(slow, /^(HTTP\/1\.1 408 |$)/, 'with a 408 or nothing');
  const body = await raw(path, (s) => s.write(`PUT /api/v1/vm.add-ram HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{`), 5000);
  t.match(body, /^(HTTP\/1\.1 408 |$)/, 'a body that never ends too');
  t.same(vm.calls, []);
  t.equal((await call(path, 'GET', '/api/v1/vm.info')).status, 200, 'the API still answers');
  await api.close();
});

t.test('a verb slower than the idle timeout is answered: the connection waits, it is not idle', async (t) => {
  const { api, vm, path } = await serve({ idleTimeoutMs: 200 });
  vm.changeMs = 600; // a memory change waiting for the guest's ack
  const r = await call(path, 'PUT', '/api/v1/vm.add-ram', { gpa: '0x40000000', size: '16M' });
  t.equal(r.status, 200);
  t.match(r.body, { done: /added 16 MiB/ });
  const t0 = Date.now();
  const idle = await raw(path, (s) => s.write('GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n'), 3000);
  t.match(idle, /^HTTP\/1\.1 200 /);
  t.ok(Date.now() - t0 < 2000, `an idle keep-alive connection is still closed (after ${Date.now() - t0} ms)`);
  await api.close();
});

t.test('too many requests a second get a 429, too many waiting a 503', async (t) => {
  const rated = await serve({ ratePerSecond: 5 });
  const codes: number[] = [];
  for (let i = 0; i < 10; i++) codes.push((await call(rated.path, 'GET', '/api/v1/vmm.ping')).status);
  t.equal(codes.filter((c) => c === 200).length, 5);
  t.equal(codes.filter((c) => c === 429).length, 5);
  await rated.api.close();

  const queued = await serve({ queueLength: 2 });
  queued.vm.pauseMs = 200;
  const all = await Promise.all(Array.from({ length: 6 }, () => call(queued.path, 'PUT', '/api/v1/vm.pause')));
  t.equal(all.filter((r) => r.status === 200).length, 2);
  t.equal(all.filter((r) => r.status === 503).length, 4);
  t.match(all.find((r) => r.status === 503)?.body, { error: /the API is busy/ });
  await queued.api.close();
});

/** 300 requests at once from another thread (so what is measured here is the server's own work): the answers and
 * the longest gap between this thread's 1 ms timer ticks meanwhile. */
async function flood(path: string): Promise<{ codes: Record<string, number>; worst: number }> {
  const w = new Worker(
    `const { request } = require('node:http');
     const { parentPort, workerData } = require('node:worker_threads');
     let done = 0; const codes = {};
     const end = (k) => { codes[k] = (codes[k] || 0) + 1; if (++done === 300) parentPort.postMessage(codes); };
     parentPort.postMessage('ready');
     parentPort.once('message', () => { for (let i = 0; i < 300; i++) {
       const r = request({ socketPath: workerData, path: i % 2 ? '/api/v1/vm.memory' : '/api/v1/vm.info' }, (res) => {
         res.resume(); res.on('end', () => end(res.statusCode));
       });
       r.on('error', (e) => end(e.code));
       r.end();
     } });`,
    { eval: true, workerData: path },
  );
  // Measured from when the thread is up: starting a worker delays this thread's timers by itself.
  await new Promise((r) => w.once('message', r));
  let worst = 0;
  let last = performance.now();
  const tick = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, 1);
  const answered = new Promise<Record<string, number>>((resolve) => w.once('message', resolve));
  w.postMessage('go');
  const codes = await answered;
  clearInterval(tick);
  await w.terminate();
  return { codes, worst };
}

t.test('many clients at once do not hold the event loop for long', async (t) => {
  const { api, path } = await serve();
  // The first round also pays for compiling the paths it takes, here and in node's http and net.
  const warm = await flood(path);
  const { codes, worst } = await flood(path);
  t.comment(
    `300 requests at once: ${JSON.stringify(codes)}; longest event-loop gap ${worst.toFixed(1)} ms (${warm.worst.toFixed(1)} ms cold)`,
  );
  t.ok((codes['200'] ?? 0) > 0, 'some are answered');
  t.ok(worst < 50, `the longest event-loop gap (${worst.toFixed(1)} ms) stays short`);
  t.equal((await call(path, 'GET', '/api/v1/vm.info')).status, 200, 'and the API answers after');
  await api.close();
});

t.test('a live socket is refused, a stale one replaced, any other file refused', async (t) => {
  const live = join(dir, 'live.sock');
  const other = createServer().listen(live);
  await new Promise((r) => other.once('listening', r));
  await t.rejects(
    ApiServer.listen(live, async () => ({ status: 200, body: {} })),
    /--api-socket .*live\.sock is in use \(a process accepts on it; another VMM serves it\?\); stop that VMM or choose another path/,
  );
  await new Promise((r) => other.close(r));

  const stale = join(dir, 'stale.sock');
  // A process that dies with its socket bound leaves the file behind, with no one accepting.
  spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.exit(0))`]);
  t.ok(statSync(stale).isSocket(), 'the stale socket is there');
  const api = await ApiServer.listen(stale, async () => ({ status: 200, body: { ok: true } }));
  t.same((await call(stale, 'GET', '/api/v1/vm.info')).body, { ok: true }, 'served on the replaced path');
  await api.close();

  const file = join(dir, 'file');
  writeFileSync(file, 'keep me');
  await t.rejects(claimSocketPath(file), /exists and is not a socket; choose another path or remove it/);
  t.ok(existsSync(file), 'left alone');
});
