import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import {
  type KeyPair,
  MACHINE_AUTH_HEADER,
  openRelayMembers,
  RELAY_MEMBERS_MAX_BYTES,
  RELAY_MEMBERS_PATH,
  sharedSecret,
  signMachineRequest,
} from '@weft/protocol';
import { WebSocket } from 'ws';
import type { Membership } from './membership.js';

// The relay's line to control: it dials control's members endpoint, proves it is the relay of the
// relay map (its key signs the upgrade), and takes each sealed member list into the Membership
// (see @weft/protocol relay-members.ts). While control is unreachable the last list stays in force,
// as a node keeps its last netmap; the feed reconnects with back-off. With a cache file the last
// list also survives a restart of the relay: it is kept as control sealed it and checked again on
// load, so only a list control sealed for this relay's key is ever served from it.

export interface ControlFeedOptions {
  /** Control's base URL, http(s)://host:port, as nodes use it. */
  controlUrl: string;
  /** Control's public key (GET /machine/key), pinned: lists sealed with another key are refused. */
  controlKey: string;
  /** The relay's own key, the one control's relay map names. */
  keyPair: KeyPair;
  membership: Membership;
  log?: (line: string) => void;
  backoff?: { initialMs?: number; maxMs?: number };
  /** Where the last list is kept (in the relay's state folder, 0600), to serve it after a restart. */
  cacheFile?: string;
  /** Hearing nothing (not even control's ping) for this long means the line is dead: reconnect. */
  idleTimeoutMs?: number;
}

export class ControlFeed {
  private ws: WebSocket | null = null;
  private stopped = false;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly secret: Uint8Array;
  private readonly url: URL;
  private saving: Promise<void> = Promise.resolve();

  constructor(private readonly opts: ControlFeedOptions) {
    this.secret = sharedSecret(opts.keyPair.privateKey, opts.controlKey);
    this.url = new URL(RELAY_MEMBERS_PATH, opts.controlUrl);
    this.url.protocol = this.url.protocol === 'https:' ? 'wss:' : 'ws:';
  }

  start(): void {
    this.loadCache();
    this.connect();
  }

  close(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.idleTimer);
    this.ws?.terminate();
  }

  private connect(): void {
    const nonce = randomBytes(32).toString('base64url');
    const url = new URL(this.url);
    url.searchParams.set('nonce', nonce);
    const signature = signMachineRequest({
      machinePrivateKey: this.opts.keyPair.privateKey,
      controlPublicKey: this.opts.controlKey,
      method: 'GET',
      path: RELAY_MEMBERS_PATH,
      body: '',
    });
    const ws = new WebSocket(url, {
      headers: { [MACHINE_AUTH_HEADER]: signature },
      maxPayload: RELAY_MEMBERS_MAX_BYTES,
      handshakeTimeout: 10_000,
      perMessageDeflate: false,
    });
    this.ws = ws;
    let seq = 0;
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => {
        if (body.length < 1000) body += c.toString();
      });
      res.on('end', () => {
        this.log(`control refused the relay (HTTP ${res.statusCode}): ${body.trim().slice(0, 300)}`);
        ws.terminate();
      });
    });
    ws.on('open', () => this.heard(ws));
    ws.on('ping', () => this.heard(ws));
    ws.on('message', (data, isBinary) => {
      this.heard(ws);
      const opened = isBinary
        ? { error: 'binary message' }
        : openRelayMembers(this.secret, nonce, (data as Buffer).toString('utf8'));
      if ('error' in opened) {
        this.log(`refused a member list: ${opened.error}`);
        ws.close(1008, opened.error);
        return;
      }
      if (opened.members.seq <= seq) {
        this.log('refused a member list: out of order');
        ws.close(1008, 'out of order');
        return;
      }
      seq = opened.members.seq;
      this.saveCache(nonce, (data as Buffer).toString('utf8'));
      const before = this.opts.membership.known ? this.opts.membership.size : null;
      this.opts.membership.replace(opened.members.keys);
      this.attempt = 0;
      if (before !== this.opts.membership.size) {
        this.log(`control: ${this.opts.membership.size} node keys in the tailnet`);
      }
    });
    ws.on('error', (err) => this.log(`control ${this.url.origin}: ${err.message}`));
    ws.on('close', () => {
      clearTimeout(this.idleTimer);
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      const initial = this.opts.backoff?.initialMs ?? 1_000;
      const ceiling = Math.min(this.opts.backoff?.maxMs ?? 30_000, initial * 2 ** this.attempt++);
      this.retryTimer = setTimeout(() => this.connect(), ceiling / 2 + Math.random() * (ceiling / 2));
    });
  }

  private loadCache(): void {
    const file = this.opts.cacheFile;
    if (file === undefined) return;
    let cached: { nonce?: unknown; message?: unknown };
    try {
      cached = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log(`ignoring ${file}: ${String(err)}`);
      return;
    }
    const opened =
      typeof cached.nonce === 'string' && typeof cached.message === 'string'
        ? openRelayMembers(this.secret, cached.nonce, cached.message)
        : { error: 'malformed' };
    if ('error' in opened) {
      this.log(`ignoring ${file}: ${opened.error}`);
      return;
    }
    this.opts.membership.replace(opened.members.keys);
    this.log(`serving the last list from control (${opened.members.keys.length} node keys) until it answers`);
  }

  private saveCache(nonce: string, message: string): void {
    const file = this.opts.cacheFile;
    if (file === undefined) return;
    // One write at a time, each replacing the file whole, so a crash leaves the old or the new.
    this.saving = this.saving.then(async () => {
      try {
        await writeFile(`${file}.tmp`, JSON.stringify({ nonce, message }), { mode: 0o600 });
        await rename(`${file}.tmp`, file);
      } catch (err) {
        this.log(`cannot keep the member list in ${file}: ${String(err)}`);
      }
    });
  }

  private heard(ws: WebSocket): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      this.log('control stopped answering: reconnecting');
      ws.terminate();
    }, this.opts.idleTimeoutMs ?? 45_000);
  }

  private log(line: string): void {
    this.opts.log?.(`relay members: ${line}`);
  }
}
