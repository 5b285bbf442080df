import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import {
  CONTROL_KEY_PATH,
  generateKeyPair,
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
} from '@weft/protocol';
import { type WebSocket, WebSocketServer } from 'ws';

// A stand-in for control in engine tests: real HTTP and WebSocket on 127.0.0.1, real signature
// checks (verifyMachineRequest), but a netmap the test writes by hand. Not the real control server,
// which lives in control/ and meets the engine only on the wire.

export interface RegisteredNode {
  machineKey: string;
  req: RegisterRequest;
  authorized: boolean;
}

export class StandInControl {
  readonly keys = generateKeyPair();
  readonly nodes = new Map<string, RegisteredNode>();
  readonly endpointReports: string[][] = [];
  readonly streams = new Set<WebSocket>();
  /** Accepted pre-auth keys; any other is refused with 401. */
  readonly authKeys = new Set(['tskey-good']);
  /** The map sent as `full` on each stream connection; tests build it from the registered node. */
  netmapFor: (node: RegisteredNode) => NetMap = () => {
    throw new Error('netmapFor not set');
  };
  registerCalls = 0;
  streamConnects = 0;
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
        const [status, body] = this.handle(req, Buffer.concat(chunks).toString('utf8'));
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
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

  approve(machineKey: string): void {
    const node = this.nodes.get(machineKey);
    if (node) node.authorized = true;
  }

  private verify(req: IncomingMessage, body: string): string | null {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
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

  private handle(req: IncomingMessage, body: string): [number, unknown] {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method === 'GET' && path === CONTROL_KEY_PATH) return [200, { publicKey: this.keys.publicKey }];
    if (req.method === 'POST' && path === REGISTER_PATH) {
      this.registerCalls++;
      const machineKey = this.verify(req, body);
      if (!machineKey) return [401, { error: { code: 'unauthorized', message: 'bad machine signature' } }];
      const parsed = RegisterRequest.safeParse(JSON.parse(body));
      if (!parsed.success)
        return [400, { error: { code: 'invalid-request', message: 'bad register request' } }];
      const reg = parsed.data;
      const known = this.nodes.get(machineKey);
      if (reg.authKey !== undefined && !this.authKeys.has(reg.authKey)) {
        return [401, { error: { code: 'invalid-auth-key', message: 'invalid or expired auth key' } }];
      }
      const authorized =
        reg.authKey !== undefined || (known?.authorized === true && known.req.nodeKey === reg.nodeKey);
      const node: RegisteredNode = { machineKey, req: reg, authorized };
      this.nodes.set(machineKey, node);
      const res: RegisterResponse = authorized
        ? { status: 'authorized', node: this.netmapFor(node).self }
        : { status: 'needs-auth', authUrl: `${this.url}/a/${randomBytes(6).toString('hex')}` };
      return [200, res];
    }
    return [404, { error: { code: 'not-found', message: 'not found' } }];
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const machineKey = this.verify(req, '');
    const node = machineKey ? this.nodes.get(machineKey) : undefined;
    if (path !== STREAM_PATH || !node?.authorized) {
      socket.end(
        'HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{}',
      );
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.streamConnects++;
      this.streams.add(ws);
      ws.on('close', () => this.streams.delete(ws));
      ws.on('message', (data) => {
        const msg = StreamClientMessage.parse(JSON.parse(data.toString()));
        this.endpointReports.push(msg.endpoints);
      });
      ws.send(JSON.stringify({ type: 'full', netmap: this.netmapFor(node) } satisfies StreamServerMessage));
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
