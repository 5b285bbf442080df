import { mkdtemp, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type DesiredState,
  HELPER_MAX_MESSAGE_BYTES,
  HelperResponse,
  type InterfaceStatus,
} from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { absentStatus, BackendError, type PlatformBackend } from './backend.js';
import type { Logger } from './log.js';
import { HelperServer } from './server.js';
import { publicKeyOf } from './validate.js';

// The real socket server with a fake backend that records calls: validation and framing are tested
// where the engine meets them, and a refused request must never reach the backend.

const silent: Logger = { info: () => {}, warn: () => {}, error: () => {} };
const key = (n: number) => Buffer.alloc(32, n).toString('base64');
const PRIVATE = key(1);

function validState(): DesiredState {
  return {
    interface: {
      name: 'wg0',
      privateKey: PRIVATE,
      listenPort: 51820,
      addresses: ['100.64.0.1/32'],
      mtu: 1280,
    },
    peers: [{ publicKey: key(2), allowedIPs: ['100.64.0.2/32'], endpoint: '198.18.0.2:51820' }],
    routes: ['100.64.0.2/32'],
  };
}

class RecordingBackend implements PlatformBackend {
  readonly calls: string[] = [];
  active = 0;
  maxActive = 0;
  delayMs = 0;
  failWith: Error | null = null;

  private async record(call: string, name: string): Promise<InterfaceStatus> {
    this.calls.push(call);
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    await new Promise((r) => setTimeout(r, this.delayMs));
    this.active--;
    if (this.failWith) throw this.failWith;
    return { ...absentStatus(name), exists: call.startsWith('apply'), backend: 'wireguard-go' };
  }
  apply(state: DesiredState) {
    return this.record(`apply ${state.interface.name}`, state.interface.name);
  }
  status(name: string) {
    return this.record(`status ${name}`, name);
  }
  down(name: string) {
    return this.record(`down ${name}`, name);
  }
  async shutdown() {}
  async restore() {}
  async detach() {}
}

/** A tiny NDJSON client, as the engine would be. */
class Client {
  private buffered = '';
  private readonly responses: HelperResponse[] = [];
  private waiter: (() => void) | null = null;
  readonly closed: Promise<void>;

  constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      this.buffered += text;
      for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
        this.responses.push(HelperResponse.parse(JSON.parse(this.buffered.slice(0, nl))));
        this.buffered = this.buffered.slice(nl + 1);
      }
      this.waiter?.();
    });
    this.closed = new Promise((resolve) => socket.on('close', () => resolve()));
    socket.on('close', () => this.waiter?.());
  }

  static connect(path: string): Promise<Client> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(path, () => resolve(new Client(socket)));
      socket.once('error', reject);
    });
  }

  send(line: string | Buffer): void {
    this.socket.write(line);
  }

  async next(): Promise<HelperResponse> {
    while (this.responses.length === 0) {
      if (this.socket.destroyed) throw new Error('connection closed without a response');
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
    return this.responses.shift() as HelperResponse;
  }

  async request(req: unknown): Promise<HelperResponse> {
    this.send(`${JSON.stringify(req)}\n`);
    return this.next();
  }
}

let dir: string;
let path: string;
let backend: RecordingBackend;
let server: HelperServer;
const clients: Client[] = [];

async function connect(): Promise<Client> {
  const c = await Client.connect(path);
  clients.push(c);
  return c;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weft-helper-test-'));
  path = join(dir, 'run', 'helper.sock');
  backend = new RecordingBackend();
  server = new HelperServer({ backend, log: silent, maxConnections: 4 });
  await server.listen(path);
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.socket.destroy();
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

describe('valid requests', () => {
  it('runs apply, status and down and answers with the status under the same id', async () => {
    const c = await connect();
    const applied = await c.request({ id: 7, op: 'apply', state: validState() });
    expect(applied).toMatchObject({ id: 7, ok: true, status: { name: 'wg0', exists: true } });
    expect(await c.request({ id: 8, op: 'status', interface: 'wg0' })).toMatchObject({ id: 8, ok: true });
    expect(await c.request({ id: 9, op: 'down', interface: 'wg0' })).toMatchObject({ id: 9, ok: true });
    expect(backend.calls).toEqual(['apply wg0', 'status wg0', 'down wg0']);
  });

  it('answers pipelined requests in order', async () => {
    const c = await connect();
    c.send(
      ['status', 'down', 'status']
        .map((op, id) => `${JSON.stringify({ id, op, interface: 'wg0' })}\n`)
        .join(''),
    );
    expect([(await c.next()).id, (await c.next()).id, (await c.next()).id]).toEqual([0, 1, 2]);
  });

  it('runs requests from all connections one at a time', async () => {
    backend.delayMs = 30;
    const cs = await Promise.all([connect(), connect(), connect()]);
    const answers = await Promise.all(
      cs.map((c, i) => c.request({ id: i, op: 'status', interface: `wg${i}` })),
    );
    expect(answers.every((a) => a.ok)).toBe(true);
    expect(backend.calls).toHaveLength(3);
    expect(backend.maxActive).toBe(1);
  });

  it('accepts a line of exactly the size limit', async () => {
    const c = await connect();
    const json = JSON.stringify({ id: 1, op: 'status', interface: 'wg0' });
    c.send(`${json}${' '.repeat(HELPER_MAX_MESSAGE_BYTES - json.length)}\n`);
    expect(await c.next()).toMatchObject({ id: 1, ok: true });
  });

  it('answers a client that shuts its side after an unterminated request', async () => {
    const c = await connect();
    c.socket.end(JSON.stringify({ id: 3, op: 'status', interface: 'wg0' }));
    expect(await c.next()).toMatchObject({ id: 3, ok: true });
    await c.closed;
  });

  it('creates the socket as 0600 in a new 0755 directory', async () => {
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'run'))).mode & 0o777).toBe(0o755);
  });
});

describe('refusals: a clear error and the backend is never called', () => {
  const withState = (change: (s: DesiredState) => void) => {
    const state = validState();
    change(state);
    return { id: 5, op: 'apply', state };
  };
  const cases: [string, unknown, string][] = [
    [
      'a malformed private key',
      withState((s) => {
        s.interface.privateKey = 'not-a-key';
      }),
      'state.interface.privateKey: must be a 32-byte key in base64',
    ],
    [
      'a peer key of the wrong length',
      withState((s) => {
        (s.peers[0] as { publicKey: string }).publicKey = Buffer.alloc(31).toString('base64');
      }),
      'state.peers[0].publicKey: must be a 32-byte key in base64',
    ],
    [
      'a prefix length beyond 32',
      withState((s) => {
        (s.peers[0] as { allowedIPs: string[] }).allowedIPs = ['1.2.3.4/33'];
      }),
      'state.peers[0].allowedIPs[0]: must be a CIDR prefix with no host bits set',
    ],
    [
      'a route with host bits set',
      withState((s) => {
        s.routes = ['100.64.0.1/10'];
      }),
      'state.routes[0]: must be a CIDR prefix with no host bits set',
    ],
    [
      'an interface name with a semicolon',
      withState((s) => {
        s.interface.name = 'wg0;reboot';
      }),
      'state.interface.name: must be 1-15 letters, digits, _ or -, starting with a letter',
    ],
    [
      'an interface name with a path',
      { id: 5, op: 'down', interface: '../etc' },
      'interface: must be 1-15 letters, digits, _ or -, starting with a letter',
    ],
    ['an unknown field', { ...withState(() => {}), extra: true }, 'request: Unrecognized key: "extra"'],
    [
      'an unknown field in a peer',
      withState((s) => {
        Object.assign(s.peers[0] as object, { presharedKey: key(9) });
      }),
      'state.peers[0]: Unrecognized key: "presharedKey"',
    ],
    [
      'an unknown op',
      { id: 5, op: 'reboot' },
      "op: Invalid discriminator value. Expected 'apply' | 'status' | 'down'",
    ],
    ['a missing state', { id: 5, op: 'apply' }, 'state: Invalid input: expected object, received undefined'],
    [
      'an MTU below IPv6 minimum',
      withState((s) => {
        s.interface.mtu = 1279;
      }),
      'state.interface.mtu:',
    ],
    [
      "the interface's own key as a peer",
      withState((s) => {
        (s.peers[0] as { publicKey: string }).publicKey = publicKeyOf(PRIVATE);
      }),
      "state.peers[0].publicKey: is the interface's own public key",
    ],
    [
      'the same peer twice',
      withState((s) => {
        s.peers.push({ publicKey: key(2), allowedIPs: [] });
      }),
      'state.peers[1].publicKey: repeats state.peers[0].publicKey',
    ],
    [
      'one prefix allowed for two peers',
      withState((s) => {
        s.peers.push({ publicKey: key(3), allowedIPs: ['100.64.0.2/32'] });
      }),
      'state.peers[1].allowedIPs[0]: 100.64.0.2/32 is already allowed for state.peers[0]',
    ],
    [
      'a link-local address',
      withState((s) => {
        s.interface.addresses = ['fe80::1/64'];
      }),
      'state.interface.addresses[0]: must not be an unspecified, loopback, link-local or multicast address',
    ],
    [
      'an address with prefix length 0',
      withState((s) => {
        s.interface.addresses = ['100.64.0.1/0'];
      }),
      'state.interface.addresses[0]: covers more than 1/64 of the IPv4 address space, which makes it an exit route',
    ],
    [
      'a multicast route',
      withState((s) => {
        s.routes = ['ff02::/16'];
      }),
      'state.routes[0]: link-local and multicast prefixes are not routed',
    ],
    [
      'a filter port range that runs backwards',
      withState((s) => {
        s.filter = [
          {
            src: ['0.0.0.0/0'],
            dst: [{ prefix: '100.64.0.1/32', ports: { first: 23, last: 22 } }],
            protos: [6],
          },
        ];
      }),
      'state.filter[0].dst[0].ports: first must not be greater than last',
    ],
    [
      'a filter source that is not a prefix',
      withState((s) => {
        s.filter = [
          { src: ['*'], dst: [{ prefix: '100.64.0.1/32', ports: { first: 0, last: 0 } }], protos: [6] },
        ];
      }),
      'state.filter[0].src[0]: must be a CIDR prefix with no host bits set',
    ],
    [
      'a filter rule with no protocol',
      withState((s) => {
        s.filter = [
          {
            src: ['0.0.0.0/0'],
            dst: [{ prefix: '100.64.0.1/32', ports: { first: 0, last: 0 } }],
            protos: [],
          },
        ];
      }),
      'state.filter[0].protos:',
    ],
    [
      'a default route in routes',
      withState((s) => {
        s.routes = ['0.0.0.0/0'];
      }),
      'state.routes[0]: covers more than 1/64 of the IPv4 address space, which makes it an exit route; the default route goes through the tunnel with exitNode',
    ],
    [
      'an exit-node bypass that is everything',
      withState((s) => {
        s.exitNode = { allowedLan: [], bypass: ['::/0'] };
      }),
      'state.exitNode.bypass[0]: covers more than 1/64 of the IPv6 address space, which makes it an exit route',
    ],
    [
      'an exit node that also uses one',
      withState((s) => {
        s.exitNode = { allowedLan: [], bypass: [] };
        s.router = { routes: ['0.0.0.0/0', '::/0'], masquerade: true };
      }),
      'state.exitNode: a node that offers itself as exit node cannot use one',
    ],
    [
      'a router with no routes',
      withState((s) => {
        s.router = { routes: [], masquerade: true };
      }),
      'state.router.routes:',
    ],
  ];

  it.each(cases)('%s', async (_, request, message) => {
    const c = await connect();
    const answer = await c.request(request);
    expect(answer).toEqual({
      id: 5,
      ok: false,
      error: { code: 'invalid-request', message: expect.any(String) },
    });
    expect(answer.ok === false && answer.error.message).toContain(message);
    expect(backend.calls).toEqual([]);
  });

  it('names every problem in one answer, up to a limit', async () => {
    const c = await connect();
    const state = validState();
    state.routes = Array.from({ length: 8 }, () => '1.2.3.4/33');
    const answer = await c.request({ id: 1, op: 'apply', state });
    expect(answer.ok === false && answer.error.message).toMatch(/^state\.routes\[0\]: .*; and 3 more$/);
  });

  it('refuses bad JSON with id null and keeps the connection', async () => {
    const c = await connect();
    c.send('{"id": 1, "op": \n');
    expect(await c.next()).toMatchObject({ id: null, ok: false, error: { code: 'invalid-request' } });
    expect(await c.request({ id: 2, op: 'status', interface: 'wg0' })).toMatchObject({ id: 2, ok: true });
    expect(backend.calls).toEqual(['status wg0']);
  });

  it('refuses a line that is not UTF-8', async () => {
    const c = await connect();
    c.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x0a]));
    const answer = await c.next();
    expect(answer).toMatchObject({ id: null, ok: false, error: { message: 'request is not valid UTF-8' } });
  });

  it('answers too-large and closes the connection for a line over the limit', async () => {
    const c = await connect();
    // No newline at all: the server must give up without waiting for the end of the line.
    c.send(Buffer.alloc(HELPER_MAX_MESSAGE_BYTES + 1, 0x20));
    expect(await c.next()).toMatchObject({ id: null, ok: false, error: { code: 'too-large' } });
    await c.closed;
    expect(backend.calls).toEqual([]);
  });

  it('answers requests before an oversized line, then too-large', async () => {
    const c = await connect();
    const ok = `${JSON.stringify({ id: 1, op: 'status', interface: 'wg0' })}\n`;
    c.send(
      Buffer.concat([Buffer.from(ok), Buffer.alloc(HELPER_MAX_MESSAGE_BYTES + 10, 0x20), Buffer.from('\n')]),
    );
    expect(await c.next()).toMatchObject({ id: 1, ok: true });
    expect(await c.next()).toMatchObject({ ok: false, error: { code: 'too-large' } });
    await c.closed;
  });
});

describe('errors and limits', () => {
  it('reports a backend error with its code', async () => {
    backend.failWith = new BackendError('invalid-request', 'eth0 exists and is not a WireGuard interface');
    const c = await connect();
    expect(await c.request({ id: 1, op: 'down', interface: 'eth0' })).toEqual({
      id: 1,
      ok: false,
      error: { code: 'invalid-request', message: 'eth0 exists and is not a WireGuard interface' },
    });
  });

  it('reports any other failure as os-error with its message', async () => {
    backend.failWith = new Error('ip link del wg0: exit 2: Operation not permitted');
    const c = await connect();
    const answer = await c.request({ id: 1, op: 'down', interface: 'wg0' });
    expect(answer).toMatchObject({
      id: 1,
      ok: false,
      error: { code: 'os-error', message: expect.stringContaining('ip link del') },
    });
  });

  it('answers busy beyond the connection limit', async () => {
    await Promise.all([connect(), connect(), connect(), connect()]);
    const extra = await connect();
    expect(await extra.next()).toMatchObject({ id: null, ok: false, error: { code: 'busy' } });
    await extra.closed;
  });

  it('close() answers the running request, refuses queued ones, closes every connection and the socket', async () => {
    backend.delayMs = 100;
    const busy = await connect();
    const idle = await connect();
    busy.send(
      ['wg0', 'wg1'].map((name, id) => `${JSON.stringify({ id, op: 'status', interface: name })}\n`).join(''),
    );
    await new Promise((r) => setTimeout(r, 20));
    await server.close();
    expect(await busy.next()).toMatchObject({ id: 0, ok: true });
    expect(await busy.next()).toMatchObject({ id: 1, ok: false, error: { code: 'busy' } });
    await Promise.all([busy.closed, idle.closed]);
    expect(backend.calls).toEqual(['status wg0']);
    await expect(stat(path)).rejects.toThrow(/ENOENT/);
    server = new HelperServer({ backend, log: silent });
    await server.listen(path);
  });
});
