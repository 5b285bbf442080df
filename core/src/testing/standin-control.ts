import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import {
  CONTROL_KEY_PATH,
  generateKeyPair,
  LOGIN_CANCEL_PATH,
  LOGOUT_PATH,
  MACHINE_AUTH_HEADER,
  type NetMap,
  type NodeView,
  REGISTER_PATH,
  RegisterRequest,
  type RegisterResponse,
  STREAM_PATH,
  StreamClientMessage,
  type StreamServerMessage,
  verifyMachineRequest,
  verifyNodeKeyRotationProof,
} from '@weft/protocol';
import { type WebSocket, WebSocketServer } from 'ws';

// A stand-in for control in engine tests: real HTTP and WebSocket on 127.0.0.1, real signature
// checks (verifyMachineRequest), but a netmap the test writes by hand. Not the real control server,
// which lives in control/ and meets the engine only on the wire.

export interface RegisteredNode {
  machineKey: string;
  req: RegisterRequest;
  authorized: boolean;
  /** Its key expired (or it logged out): refused on the stream, asked to sign in again. */
  expired?: boolean;
  /** The pending interactive login's link, and how it ended if it did. */
  authUrl?: string;
  loginEnded?: 'login-expired' | 'login-cancelled';
}

type Answer = [number, unknown];
const refusal = (status: number, code: string, message: string): Answer => [
  status,
  { error: { code, message } },
];

export class StandInControl {
  /** Control's key pair; a test replaces it to play a reinstalled (or impersonated) control. */
  keys = generateKeyPair();
  readonly nodes = new Map<string, RegisteredNode>();
  readonly endpointReports: string[][] = [];
  /** Every `routes` message received, in order. */
  readonly routeReports: string[][] = [];
  readonly streams = new Set<WebSocket>();
  /** Accepted pre-auth keys; any other is refused with 401. */
  readonly authKeys = new Set(['tskey-good']);
  /** The map sent as `full` on each stream connection; tests build it from the registered node. */
  netmapFor: (node: RegisteredNode) => NetMap = () => {
    throw new Error('netmapFor not set');
  };
  /**
   * Given: each whole map carries this token, and a stream opened with it is sent `resume` (the
   * peers it holds stay) instead. Control's digest of the peers, played by a constant.
   */
  mapToken: string | undefined;
  /** The token each stream was opened with, in order (null: none). */
  readonly streamTokens: (string | null)[] = [];
  /** What each stream was sent first, in order: a whole map or a resume. */
  readonly streamFirsts: ('full' | 'resume')[] = [];
  registerCalls = 0;
  streamConnects = 0;
  /** Registrations as they arrived (with `wait`, rotation fields …). */
  readonly registrations: RegisterRequest[] = [];
  /** How long a `wait: true` registration is held before `needs-auth` again (control: 60 s). */
  waitMs = 1_000;
  /** Machine keys that sent POST /machine/login/cancel and /machine/logout. */
  readonly cancels: string[] = [];
  readonly logouts: string[] = [];
  /** Stream attempts refused because the node's key expired. */
  expiredRefusals = 0;
  /** Set to answer every key rotation with this refusal instead of checking it. */
  refuseRotation: Answer | null = null;
  private readonly wakeups = new Set<() => void>();
  private server: Server | null = null;
  private readonly wss = new WebSocketServer({ noServer: true });
  port = 0;

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(port = 0): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        void this.handle(req, Buffer.concat(chunks).toString('utf8')).then(([status, body]) => {
          res.writeHead(status, { 'content-type': 'application/json' });
          res.end(JSON.stringify(body));
        });
      });
    });
    server.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head));
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    this.port = (server.address() as { port: number }).port;
    this.server = server;
  }

  /** Stops answering: listening socket closed and every stream cut, as when control dies. */
  async stop(): Promise<void> {
    for (const ws of this.streams) ws.terminate();
    this.streams.clear();
    const server = this.server;
    this.server = null;
    server?.closeAllConnections();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  }

  send(msg: StreamServerMessage): void {
    for (const ws of this.streams) ws.send(JSON.stringify(msg));
  }

  /** The person signed in through the node's link: its waiting registration is answered. */
  approve(machineKey: string): void {
    const node = this.nodes.get(machineKey);
    if (node) {
      node.authorized = true;
      node.expired = false;
    }
    this.wake();
  }

  /** The node's link ends (expired, or cancelled elsewhere): its waiting registration gets a 410. */
  endLogin(machineKey: string, how: 'login-expired' | 'login-cancelled'): void {
    const node = this.nodes.get(machineKey);
    if (node) node.loginEnded = how;
    this.wake();
  }

  /** Expires the node's key (as `weft-control nodes expire`); `notify` sends the stream's logout. */
  expire(machineKey: string, notify: boolean): void {
    const node = this.nodes.get(machineKey);
    if (!node) return;
    node.expired = true;
    node.authorized = false;
    if (notify) this.send({ type: 'logout', reason: 'key expired' });
  }

  private wake(): void {
    for (const w of [...this.wakeups]) w();
  }

  private verify(req: IncomingMessage, body: string): string | null {
    const url = new URL(req.url ?? '/', 'http://x');
    // The stream's query (its map token) is signed with its path, as control reads it.
    const path = url.pathname === STREAM_PATH ? `${url.pathname}${url.search}` : url.pathname;
    const header = req.headers[MACHINE_AUTH_HEADER];
    const r = verifyMachineRequest({
      header: typeof header === 'string' ? header : undefined,
      controlPrivateKey: this.keys.privateKey,
      method: req.method ?? 'GET',
      path,
      body,
    });
    return 'machineKey' in r ? r.machineKey : null;
  }

  private async handle(req: IncomingMessage, body: string): Promise<Answer> {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method === 'GET' && path === CONTROL_KEY_PATH) return [200, { publicKey: this.keys.publicKey }];
    if (req.method !== 'POST') return refusal(404, 'not-found', 'not found');
    const machineKey = this.verify(req, body);
    if (path === REGISTER_PATH) this.registerCalls++;
    if (!machineKey) return refusal(401, 'unauthorized', 'bad machine signature');
    if (path === REGISTER_PATH) return this.register(machineKey, body);
    if (path === LOGIN_CANCEL_PATH) {
      this.cancels.push(machineKey);
      const node = this.nodes.get(machineKey);
      const pending =
        node !== undefined && !node.authorized && node.authUrl !== undefined && !node.loginEnded;
      if (pending) this.endLogin(machineKey, 'login-cancelled');
      return [200, { cancelled: pending }];
    }
    if (path === LOGOUT_PATH) {
      this.logouts.push(machineKey);
      const node = this.nodes.get(machineKey);
      const valid = node?.authorized === true && !node.expired;
      if (valid) this.expire(machineKey, false);
      return [200, { loggedOut: valid }];
    }
    return refusal(404, 'not-found', 'not found');
  }

  private async register(machineKey: string, body: string): Promise<Answer> {
    const parsed = RegisterRequest.safeParse(JSON.parse(body));
    if (!parsed.success) return refusal(400, 'invalid-request', 'bad register request');
    const reg = parsed.data;
    this.registrations.push(reg);
    const known = this.nodes.get(machineKey);
    if (reg.authKey !== undefined && !this.authKeys.has(reg.authKey)) {
      return refusal(401, 'invalid-auth-key', 'invalid or expired auth key');
    }
    const valid = known?.authorized === true && !known.expired;
    if (valid && reg.oldNodeKey !== undefined && known.req.nodeKey !== reg.nodeKey) {
      return this.rotate(known, reg);
    }
    if (reg.authKey !== undefined || (valid && known.req.nodeKey === reg.nodeKey)) {
      const node: RegisteredNode = { machineKey, req: reg, authorized: true };
      this.nodes.set(machineKey, node);
      return [200, { status: 'authorized', node: this.netmapFor(node).self } satisfies RegisterResponse];
    }
    // Interactive login: one link per node key until it ends.
    let node = known;
    if (!node || node.req.nodeKey !== reg.nodeKey || node.authorized || (node.loginEnded && !reg.wait)) {
      node = {
        machineKey,
        req: reg,
        authorized: false,
        authUrl: `${this.url}/a/${randomBytes(6).toString('hex')}`,
      };
      this.nodes.set(machineKey, node);
    }
    if (reg.wait) {
      const waiting = node;
      const deadline = Date.now() + this.waitMs;
      while (!waiting.authorized && !waiting.loginEnded && Date.now() < deadline) {
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            this.wakeups.delete(done);
            resolve();
          };
          const timer = setTimeout(done, deadline - Date.now());
          this.wakeups.add(done);
        });
      }
      if (waiting.authorized) {
        return [200, { status: 'authorized', node: this.netmapFor(waiting).self } satisfies RegisterResponse];
      }
      if (waiting.loginEnded === 'login-expired')
        return refusal(410, 'login-expired', 'the sign-in link expired');
      if (waiting.loginEnded) return refusal(410, 'login-cancelled', 'this sign-in was cancelled');
    }
    const expiresAt = new Date(Date.now() + 600_000).toISOString();
    return [
      200,
      { status: 'needs-auth', authUrl: node.authUrl as string, expiresAt } satisfies RegisterResponse,
    ];
  }

  /** Key rotation, checked as control checks it: the current key, proven. */
  private rotate(known: RegisteredNode, reg: RegisterRequest): Answer {
    if (this.refuseRotation) return this.refuseRotation;
    if (known.req.nodeKey !== reg.oldNodeKey) {
      return refusal(409, 'old-node-key-mismatch', 'oldNodeKey is not this node’s current key');
    }
    const proven =
      reg.oldNodeKeyProof !== undefined &&
      verifyNodeKeyRotationProof({
        controlPrivateKey: this.keys.privateKey,
        oldNodeKey: reg.oldNodeKey,
        machineKey: known.machineKey,
        newNodeKey: reg.nodeKey,
        proof: reg.oldNodeKeyProof,
      });
    if (!proven)
      return refusal(403, 'bad-node-key-proof', 'the proof of the old node key is missing or wrong');
    known.req = { ...reg };
    return [200, { status: 'authorized', node: this.netmapFor(known).self } satisfies RegisterResponse];
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const machineKey = this.verify(req, '');
    const node = machineKey ? this.nodes.get(machineKey) : undefined;
    if (path === STREAM_PATH && node?.expired) {
      this.expiredRefusals++;
      const body = JSON.stringify({
        error: { code: 'node-key-expired', message: 'this node’s key has expired: log in again' },
      });
      socket.end(
        `HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n${body}`,
      );
      return;
    }
    if (path !== STREAM_PATH || !node?.authorized) {
      socket.end(
        'HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{}',
      );
      return;
    }
    const held = new URL(req.url ?? '/', 'http://x').searchParams.get('mapToken');
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.streamConnects++;
      this.streamTokens.push(held);
      this.streams.add(ws);
      ws.on('close', () => this.streams.delete(ws));
      ws.on('message', (data) => {
        const msg = StreamClientMessage.parse(JSON.parse(data.toString()));
        if (msg.type === 'endpoints') this.endpointReports.push(msg.endpoints);
        else this.routeReports.push(msg.advertisedRoutes);
      });
      const { peers, ...rest } = this.netmapFor(node);
      const mapToken = this.mapToken;
      const first: StreamServerMessage =
        mapToken !== undefined && held === mapToken
          ? { type: 'resume', mapToken, netmap: rest }
          : { type: 'full', ...(mapToken === undefined ? {} : { mapToken }), netmap: { ...rest, peers } };
      this.streamFirsts.push(first.type);
      ws.send(JSON.stringify(first));
    });
  }
}

/** A NodeView with plausible defaults. */
export function nodeView(n: number, nodeKey: string, over: Partial<NodeView> = {}): NodeView {
  return {
    id: `n${n}`,
    name: `node${n}`,
    user: 'alice@example.com',
    tags: [],
    nodeKey,
    addresses: [`100.64.0.${n}/32`, `fd7a:115c:a1e0::${n}/128`],
    allowedIPs: [`100.64.0.${n}/32`, `fd7a:115c:a1e0::${n}/128`],
    endpoints: [`198.18.0.${n}:41641`],
    online: true,
    lastSeen: '2025-01-01T00:00:00.000Z',
    keyExpiry: null,
    os: 'linux',
    ...over,
  };
}
