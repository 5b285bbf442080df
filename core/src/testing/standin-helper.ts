import { rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { type DesiredState, HelperRequest, type HelperResponse, type InterfaceStatus } from '@weft/protocol';

// A recording stand-in for weft-helper: the real NDJSON protocol on a real unix socket, but it
// only remembers the state it was given instead of touching the OS. The real helper lives in
// native-helpers/ and is exercised by the e2e network tests.

export class StandInHelper {
  readonly requests: HelperRequest[] = [];
  /** What the "OS" looks like: the last applied state, or null after down. */
  state: DesiredState | null = null;
  /** Figures reported per peer key by `status`, as WireGuard would. */
  peerStats = new Map<
    string,
    { endpoint: string; latestHandshake: number; rxBytes: number; txBytes: number }
  >();
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();

  constructor(readonly path: string) {}

  async start(): Promise<void> {
    await rm(this.path, { force: true });
    const server = createServer((socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.setEncoding('utf8');
      let buf = '';
      socket.on('data', (chunk: string) => {
        buf += chunk;
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          socket.write(`${JSON.stringify(this.answer(line))}\n`);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(this.path, resolve));
    this.server = server;
  }

  /** Dies like a crashed helper: connections cut, nothing listening; the "OS" state is lost. */
  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = null;
    this.state = null;
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  }

  ops(): string[] {
    return this.requests.map((r) => r.op);
  }

  lastApply(): DesiredState | null {
    const applies = this.requests.filter((r) => r.op === 'apply');
    const last = applies[applies.length - 1];
    return last?.op === 'apply' ? last.state : null;
  }

  private answer(line: string): HelperResponse {
    const parsed = HelperRequest.safeParse(JSON.parse(line));
    if (!parsed.success) {
      return { id: null, ok: false, error: { code: 'invalid-request', message: parsed.error.message } };
    }
    const req = parsed.data;
    this.requests.push(req);
    if (req.op === 'apply') this.state = req.state;
    if (req.op === 'down') this.state = null;
    return {
      id: req.id,
      ok: true,
      status: this.ifaceStatus(req.op === 'apply' ? req.state.interface.name : req.interface),
    };
  }

  private ifaceStatus(name: string): InterfaceStatus {
    const s = this.state;
    return {
      name,
      exists: s !== null,
      backend: s ? 'wireguard-go' : null,
      publicKey: null,
      listenPort: s?.interface.listenPort ?? null,
      addresses: s?.interface.addresses ?? [],
      peers: (s?.peers ?? []).map((p) => {
        const st = this.peerStats.get(p.publicKey);
        return {
          publicKey: p.publicKey,
          endpoint: st?.endpoint ?? p.endpoint ?? null,
          allowedIPs: p.allowedIPs,
          latestHandshake: st?.latestHandshake ?? null,
          rxBytes: st?.rxBytes ?? 0,
          txBytes: st?.txBytes ?? 0,
        };
      }),
    };
  }
}
