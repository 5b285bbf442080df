import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorBody, LOCALAPI_PREFIX, type Status, type UpRequest, type WatchEvent } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WeftError } from '../errors.js';
import { silentLogger } from '../log/logger.js';
import { LocalApiClient } from './client.js';
import { LocalApiServer, type LocalBackend } from './server.js';

const stopped: Status = {
  backendState: 'Stopped',
  controlUrl: null,
  authUrl: null,
  self: null,
  peers: [],
  health: [],
};

class StubBackend implements LocalBackend {
  ups: UpRequest[] = [];
  fail: WeftError | null = null;
  listeners: Array<(e: WatchEvent) => void> = [];
  async status() {
    return stopped;
  }
  async up(req: UpRequest) {
    if (this.fail) throw this.fail;
    this.ups.push(req);
  }
  async down() {}
  reapplied = 0;
  async reapply() {
    this.reapplied++;
  }
  async logout() {
    throw new Error('boom');
  }
  queries: { name: string; type: string }[] = [];
  dns = {
    status: () => {
      throw new Error('not asked in these tests');
    },
    query: async (req: { name: string; type: string }) => {
      this.queries.push(req);
      return { name: req.name, type: req.type, rcode: 'NOERROR', records: ['A 100.64.0.2'] };
    },
  };
  watch(listener: (e: WatchEvent) => void) {
    this.listeners.push(listener);
    listener({ initial: true, status: stopped });
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    };
  }
}

let dir: string;
let socket: string;
let backend: StubBackend;
let server: LocalApiServer;

function raw(method: string, path: string, body?: string, contentType = 'application/json') {
  return new Promise<{ status: number; headers: Record<string, unknown>; json: unknown }>(
    (resolve, reject) => {
      const req = request({
        socketPath: socket,
        method,
        path,
        headers: body === undefined ? {} : { 'content-type': contentType },
      });
      req.on('error', reject);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            json: JSON.parse(Buffer.concat(chunks).toString()),
          }),
        );
      });
      req.end(body);
    },
  );
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weft-localapi-'));
  socket = join(dir, 'run', 'weftd.sock');
  backend = new StubBackend();
  server = new LocalApiServer(backend, silentLogger);
  await server.listen(socket);
});
afterEach(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

describe('LocalAPI', () => {
  it('listens on an owner-only socket', async () => {
    expect((await stat(socket)).mode & 0o777).toBe(0o600);
  });

  it('serves status and validated up requests', async () => {
    const client = new LocalApiClient(socket);
    expect(await client.status()).toEqual(stopped);
    await client.up({ controlUrl: 'http://198.18.0.1:8080', authKey: 'k', hostname: 'laptop' });
    expect(backend.ups).toEqual([{ controlUrl: 'http://198.18.0.1:8080', authKey: 'k', hostname: 'laptop' }]);
  });

  it('refuses malformed requests with 400 and an ErrorBody, before reaching the engine', async () => {
    const up = `${LOCALAPI_PREFIX}/up`;
    const cases: Array<[string, string, string?]> = [
      ['{', 'not valid JSON'],
      ['{"controlUrl":"ftp://x"}', 'controlUrl: must be an http(s) URL'],
      ['{"controlUrl":"http://x","extra":1}', 'Unrecognized key'],
      ['{"controlUrl":"http://x","hostname":"Bad Name"}', 'hostname'],
      ['{}', 'controlUrl'],
      ['{"controlUrl":"http://x"}', 'application/json', 'text/plain'],
    ];
    for (const [body, message, type] of cases) {
      const r = await raw('POST', up, body, type);
      expect(r.status, body).toBe(400);
      const err = ErrorBody.parse(r.json);
      expect(err.error.code).toBe('invalid-request');
      expect(err.error.message).toContain(message);
    }
    expect(backend.ups).toEqual([]);
    const extra = await raw('POST', `${LOCALAPI_PREFIX}/down`, '{"x":1}');
    expect(extra.status).toBe(400);
  });

  it('answers unknown paths with 404, wrong methods with 405, big bodies with 413', async () => {
    expect((await raw('GET', `${LOCALAPI_PREFIX}/nope`)).status).toBe(404);
    expect((await raw('GET', '/status')).status).toBe(404);
    const r = await raw('GET', `${LOCALAPI_PREFIX}/up`);
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe('POST');
    expect(ErrorBody.parse(r.json).error.code).toBe('method-not-allowed');
    const big = await raw(
      'POST',
      `${LOCALAPI_PREFIX}/up`,
      JSON.stringify({ controlUrl: `http://x/${'a'.repeat(70_000)}` }),
    );
    expect(big.status).toBe(413);
  });

  it('answers a request target that is no path (found by npm run fuzz) with 400, not a 500', async () => {
    const r = await raw('GET', '//');
    expect(r.status).toBe(400);
    expect(ErrorBody.parse(r.json).error.code).toBe('invalid-request');
  });

  it('maps engine errors to status codes and keeps their message', async () => {
    const expectations: Array<[WeftError, number]> = [
      [new WeftError('control-rejected', 'control refused registration: unknown pre-auth key'), 403],
      [new WeftError('control-unreachable', 'control unreachable at http://x'), 503],
      [new WeftError('helper-unavailable', 'weft-helper is not reachable'), 503],
      [new WeftError('conflict', 'logged in elsewhere'), 409],
      [new WeftError('timeout', 'not running after 45 s'), 504],
    ];
    for (const [err, status] of expectations) {
      backend.fail = err;
      const r = await raw('POST', `${LOCALAPI_PREFIX}/up`, '{"controlUrl":"http://x"}');
      expect(r.status).toBe(status);
      expect(r.json).toEqual({ error: { code: err.code, message: err.message } });
    }
    const crash = await raw('POST', `${LOCALAPI_PREFIX}/logout`);
    expect(crash.status).toBe(500);
    expect(ErrorBody.parse(crash.json).error.message).toBe('internal error: boom');
  });

  it('streams watch events as newline JSON, initial state first', async () => {
    const client = new LocalApiClient(socket);
    const abort = new AbortController();
    const events: WatchEvent[] = [];
    const done = client.watch((e) => {
      events.push(e);
      if (events.length === 1)
        backend.listeners[0]?.({ initial: false, status: { ...stopped, backendState: 'Running' } });
      if (events.length === 2) abort.abort();
    }, abort.signal);
    await done;
    expect(events.map((e) => [e.initial, e.status.backendState])).toEqual([
      [true, 'Stopped'],
      [false, 'Running'],
    ]);
  });

  it('refuses to start over a live socket, and replaces a stale one', async () => {
    const second = new LocalApiServer(backend, silentLogger);
    await expect(second.listen(socket)).rejects.toThrow(/already listening/);
    await server.close();
    await writeFile(socket, '');
    server = new LocalApiServer(backend, silentLogger);
    await server.listen(socket);
    expect(await new LocalApiClient(socket).status()).toEqual(stopped);
  });

  it('re-applies on POST /reapply and answers with the status; 404 from a backend that cannot', async () => {
    expect(await new LocalApiClient(socket).reapply()).toEqual(stopped);
    expect(backend.reapplied).toBe(1);
    const older: LocalBackend = {
      status: () => backend.status(),
      up: async () => {},
      down: async () => {},
      logout: async () => {},
      watch: (l) => backend.watch(l),
    };
    const other = new LocalApiServer(older, silentLogger);
    const sock2 = join(dir, 'run', 'other.sock');
    await other.listen(sock2);
    await expect(new LocalApiClient(sock2).reapply()).rejects.toMatchObject({ httpStatus: 404 });
    await expect(new LocalApiClient(sock2).dnsStatus()).rejects.toMatchObject({ httpStatus: 404 });
    await other.close();
  });

  it('answers dns queries with a valid name and type; refuses others with 400 before the engine', async () => {
    const client = new LocalApiClient(socket);
    expect(await client.dnsQuery({ name: 'Build-Box.weft.internal.', type: 'A' })).toEqual({
      name: 'build-box.weft.internal',
      type: 'A',
      rcode: 'NOERROR',
      records: ['A 100.64.0.2'],
    });
    // SRV names start with '_'.
    expect((await client.dnsQuery({ name: '_sip._tcp.weft.internal', type: 'SRV' })).name).toBe(
      '_sip._tcp.weft.internal',
    );
    for (const body of [
      { name: 'bad name', type: 'A' },
      { name: 'a..b', type: 'A' },
      { name: 'bad-.example', type: 'A' },
      { name: `${'_'.repeat(64)}.example`, type: 'A' },
      { name: 'x', type: 'AXFR' },
      { name: 'a'.repeat(300), type: 'A' },
    ]) {
      expect((await raw('POST', `${LOCALAPI_PREFIX}/dns/query`, JSON.stringify(body))).status).toBe(400);
    }
    expect(backend.queries).toEqual([
      { name: 'build-box.weft.internal', type: 'A' },
      { name: '_sip._tcp.weft.internal', type: 'SRV' },
    ]);
  });

  it('tells the CLI plainly when weftd is not running', async () => {
    await expect(new LocalApiClient(join(dir, 'none.sock')).status()).rejects.toThrow(
      `weftd is not running (no socket at ${join(dir, 'none.sock')})`,
    );
  });
});
