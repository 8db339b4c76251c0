// The control API's wire: HTTP/1.1 on a Unix socket (as Firecracker and
// Cloud Hypervisor have it, so `curl --unix-socket` works), mode 0600.
// The VMM thread also serves the vCPUs' bus RPCs, so what a client can make
// it do is bounded: body and header sizes, the time to send a request, open
// connections, requests per second, requests queued, and how many start per
// event-loop turn (the rest wait for the next turn, after the RPCs of this one).
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { closeFd, listenUnix } from '../sys/libc.js';
import type { Reply } from './routes.js';

export interface ApiLimits {
  maxBodyBytes: number;
  maxHeaderBytes: number;
  /** To send the headers, and the whole request. */
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  /** A connection with nothing to do is closed after this. */
  idleTimeoutMs: number;
  maxConnections: number;
  /** Requests read and waiting or being answered; more get a 503. */
  queueLength: number;
  /** Requests started per event-loop turn. */
  perTurn: number;
  /** Requests accepted per second (a token bucket of as many); more get a 429. */
  ratePerSecond: number;
}

export const API_LIMITS: ApiLimits = {
  maxBodyBytes: 64 * 1024,
  maxHeaderBytes: 8 * 1024,
  headersTimeoutMs: 2000,
  requestTimeoutMs: 5000,
  idleTimeoutMs: 5000,
  maxConnections: 16,
  queueLength: 32,
  perTurn: 2,
  ratePerSecond: 200,
};

export type Handler = (method: string, url: string, body: string) => Promise<Reply>;

export class ApiSocketError extends Error {
  override readonly name = 'ApiSocketError';
}

interface Job {
  req: IncomingMessage;
  res: ServerResponse;
  body: string;
  finish: () => void;
}

export class ApiServer {
  private readonly queue: Job[] = [];
  private pending = 0;
  private scheduled = false;
  private tokens: number;
  private refilled = Date.now();
  private closed = false;
  /** Set once the socket went to another process (live update): it stays where it is. */
  private movedTo: string | undefined;
  private closing: Promise<void> | undefined;

  private constructor(
    readonly path: string,
    /** The listening socket: this process's own fd (see listenUnix), so it can be handed over. */
    readonly fd: number,
    private readonly server: Server,
    private readonly handler: Handler,
    readonly limits: ApiLimits,
  ) {
    this.tokens = limits.ratePerSecond;
  }

  /** Claims `path` (a stale socket is replaced, a live one or any other file refused) and serves on it. */
  static async listen(path: string, handler: Handler, limits: Partial<ApiLimits> = {}): Promise<ApiServer> {
    const l = { ...API_LIMITS, ...limits };
    await claimSocketPath(path);
    // bind() makes the socket file, so it is 0600 from the start, not chmod'ed after a client could connect.
    const umask = process.umask(0o177);
    let fd: number;
    try {
      fd = listenUnix(path, l.maxConnections);
    } catch (e) {
      throw new ApiSocketError(`cannot listen on --api-socket ${path}: ${(e as Error).message}`);
    } finally {
      process.umask(umask);
    }
    chmodSync(path, 0o600);
    try {
      return await ApiServer.serve(path, fd, handler, l);
    } catch (e) {
      closeFd(fd);
      removeSocket(path);
      throw e;
    }
  }

  /** Serves on a socket another process bound at `path` and handed over (live update). */
  static async adopt(path: string, fd: number, handler: Handler, limits: Partial<ApiLimits> = {}): Promise<ApiServer> {
    return ApiServer.serve(path, fd, handler, { ...API_LIMITS, ...limits });
  }

  private static async serve(path: string, fd: number, handler: Handler, l: ApiLimits): Promise<ApiServer> {
    const server = createServer({
      maxHeaderSize: l.maxHeaderBytes,
      headersTimeout: l.headersTimeoutMs,
      requestTimeout: l.requestTimeoutMs,
      // Node checks the two timeouts above only this often (30 s by default).
      connectionsCheckingInterval: Math.min(500, l.headersTimeoutMs),
      keepAliveTimeout: l.idleTimeoutMs,
    });
    server.maxConnections = l.maxConnections;
    server.setTimeout(l.idleTimeoutMs);
    const api = new ApiServer(path, fd, server, handler, l);
    server.on('request', (req, res) => api.onRequest(req, res));
    server.on('clientError', (e: NodeJS.ErrnoException, socket) => {
      const status = e.code === 'HPE_HEADER_OVERFLOW' ? 431 : e.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      const text =
        JSON.stringify({
          error: `bad HTTP request: ${e.code === 'HPE_HEADER_OVERFLOW' ? `headers over ${l.maxHeaderBytes} bytes` : (e.code ?? e.message)}`,
        }) + '\n';
      if (socket.writable)
        socket.end(
          `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${text.length}\r\n\r\n${text}`,
        );
      else socket.destroy();
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        // A short backlog: a flood of connects waits or is refused in the kernel, not accepted and dropped here.
        server.listen({ fd, backlog: l.maxConnections }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      throw new ApiSocketError(`cannot listen on --api-socket ${path}: ${(e as Error).message}`);
    }
    return api;
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    if (this.movedTo) return reply(res, 503, { error: `the VM moved to ${this.movedTo} (live update); connect again` }, true);
    if (this.closed) return reply(res, 503, { error: 'the VM is ending' }, true);
    if (!this.takeToken()) return reply(res, 429, { error: `more than ${this.limits.ratePerSecond} requests a second; retry later` }, true);
    if (this.pending >= this.limits.queueLength)
      return reply(res, 503, { error: `the API is busy (${this.pending} requests waiting); retry later` }, true);
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > this.limits.maxBodyBytes) return this.tooLarge(req, res, declared);
    this.pending++;
    let done = false;
    const finish = (): void => {
      if (!done) {
        done = true;
        this.pending--;
      }
    };
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > this.limits.maxBodyBytes) {
        finish();
        this.tooLarge(req, res, size);
      } else chunks.push(c);
    });
    req.on('end', () => {
      if (done) return;
      this.queue.push({ req, res, body: Buffer.concat(chunks).toString('utf8'), finish });
      this.pump();
    });
    // A client gone mid-request: nothing of it runs.
    req.on('close', () => {
      if (!req.complete) finish();
    });
    req.on('error', finish);
  }

  private tooLarge(req: IncomingMessage, res: ServerResponse, bytes: number): void {
    req.removeAllListeners('data');
    req.resume();
    reply(res, 413, { error: `a request body of ${bytes} bytes or more is over the ${this.limits.maxBodyBytes}-byte limit` }, true);
  }

  private takeToken(): boolean {
    const now = Date.now();
    const rate = this.limits.ratePerSecond;
    this.tokens = Math.min(rate, this.tokens + ((now - this.refilled) * rate) / 1000);
    this.refilled = now;
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }

  /** Starts up to perTurn queued requests on the next turn (after this turn's I/O, the vCPUs' RPCs among it). */
  private pump(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      for (let i = 0; i < this.limits.perTurn && this.queue.length; i++) this.start(this.queue.shift()!);
      if (this.queue.length) this.pump();
    });
  }

  private start(j: Job): void {
    const socket = j.req.socket;
    if (j.res.destroyed || socket.destroyed) return j.finish();
    // A connection waiting for its answer is busy, not idle: a memory change may wait seconds for the guest's ack.
    socket.setTimeout(0);
    this.handler(j.req.method ?? 'GET', j.req.url ?? '/', j.body)
      .then(
        (r) => reply(j.res, r.status, r.body),
        (e: unknown) => reply(j.res, 500, { error: (e as Error)?.message ?? String(e) }),
      )
      .finally(() => {
        if (!socket.destroyed) socket.setTimeout(this.limits.idleTimeoutMs);
        j.finish();
      });
  }

  /** Requests read and not yet answered (for tests and reports). */
  get waiting(): number {
    return this.pending;
  }

  /**
   * Stops accepting here once the socket serves another process (live
   * update): connections wait in the socket's backlog for that process, and
   * the socket file stays. Requests in progress are still answered.
   */
  handOver(to: string): void {
    this.movedTo = to;
    this.stopAccepting();
  }

  /** Stops accepting, answers what is in progress (for up to `graceMs`), and removes the socket unless it was handed over. */
  async close(graceMs = 1000): Promise<void> {
    const closing = this.stopAccepting();
    this.server.closeIdleConnections();
    const timer = setTimeout(() => this.server.closeAllConnections(), graceMs);
    await closing;
    clearTimeout(timer);
    if (!this.movedTo) removeSocket(this.path);
  }

  private stopAccepting(): Promise<void> {
    this.closed = true;
    // Closing the handle closes `fd`, which Node owns from listen on; the path is not unlinked (see listenUnix).
    this.closing ??= new Promise<void>((resolve) => this.server.close(() => resolve()));
    return this.closing;
  }
}

function reply(res: ServerResponse, status: number, body: unknown, close = false): void {
  if (res.destroyed || res.headersSent) return;
  const text = JSON.stringify(body, (_, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v)) + '\n';
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    ...(close ? { Connection: 'close' } : {}),
  });
  res.end(text);
}

/**
 * Makes `path` free for a new socket: nothing there, or a stale socket (no
 * one accepts on it: a VMM that died), which is removed. A live socket or a
 * file of another kind is refused with what to do.
 */
export async function claimSocketPath(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new ApiSocketError(`cannot check --api-socket ${path}: ${(e as Error).message}`);
  }
  if (!isSocket) throw new ApiSocketError(`--api-socket ${path} exists and is not a socket; choose another path or remove it`);
  const live = await new Promise<string | undefined>((resolve) => {
    const s = connect(path);
    const timer = setTimeout(() => (s.destroy(), resolve('it does not answer')), 500);
    s.once('connect', () => (clearTimeout(timer), s.destroy(), resolve('a process accepts on it')));
    s.once('error', (e: NodeJS.ErrnoException) => (clearTimeout(timer), resolve(e.code === 'ECONNREFUSED' ? undefined : e.code)));
  });
  if (live)
    throw new ApiSocketError(
      `--api-socket ${path} is in use (${live}; another VMM serves it?); stop that VMM or choose another path (remove the file if it is stale)`,
    );
  unlinkSync(path);
}

function removeSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // already gone
  }
}
