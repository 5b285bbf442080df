import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  generateKeyPair,
  MACHINE_AUTH_HEADER,
  RELAY_MEMBERS_PATH,
  sealRelayMembers,
  sharedSecret,
  verifyMachineRequest,
} from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { type WebSocket, WebSocketServer } from 'ws';
import { ControlFeed } from './control-feed.js';
import { Membership } from './membership.js';

// The relay's end of the member list against a stand-in control written from the protocol
// (control/src/relays/members-route.test.ts tests the real one; e2e/tests/relay-trust.test.ts both).

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const control = generateKeyPair();
const relay = generateKeyPair();

interface Session {
  ws: WebSocket;
  path: string;
  nonce: string;
  /** What the relay signed: its key, or the verification error. */
  signedBy: string;
}

async function fakeControl() {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  const sessions: Session[] = [];
  wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
    const url = new URL(req.url ?? '', 'http://x');
    const verified = verifyMachineRequest({
      header: req.headers[MACHINE_AUTH_HEADER] as string,
      controlPrivateKey: control.privateKey,
      method: 'GET',
      path: url.pathname,
      body: '',
    });
    sessions.push({
      ws,
      path: url.pathname,
      nonce: url.searchParams.get('nonce') ?? '',
      signedBy: 'machineKey' in verified ? verified.machineKey : verified.error,
    });
  });
  cleanups.push(() => new Promise((r) => wss.close(r)));
  const url = `http://127.0.0.1:${(wss.address() as AddressInfo).port}`;
  return { wss, sessions, url };
}

function feed(url: string, membership: Membership, cacheFile?: string) {
  const lines: string[] = [];
  const f = new ControlFeed({
    controlUrl: url,
    controlKey: control.publicKey,
    keyPair: relay,
    membership,
    cacheFile,
    backoff: { initialMs: 50, maxMs: 100 },
    log: (l) => lines.push(l),
  });
  cleanups.push(() => f.close());
  f.start();
  return lines;
}

async function until(what: string, check: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const secret = sharedSecret(control.privateKey, relay.publicKey);
const [a, b] = [generateKeyPair().publicKey, generateKeyPair().publicKey];

describe('control feed', () => {
  it('signs its upgrade with the relay key and takes sealed lists in order', async () => {
    const c = await fakeControl();
    const membership = Membership.tailnet();
    feed(c.url, membership);
    await until('the relay to connect', () => c.sessions.length === 1);
    const s = c.sessions[0] as Session;
    expect(s.path).toBe(RELAY_MEMBERS_PATH);
    expect(s.signedBy).toBe(relay.publicKey);
    expect(s.nonce).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(membership.known).toBe(false);
    s.ws.send(sealRelayMembers(secret, s.nonce, { seq: 1, keys: [a, b] }));
    await until('the list', () => membership.isMember(b));
    const removed = once(membership, 'removed');
    s.ws.send(sealRelayMembers(secret, s.nonce, { seq: 2, keys: [a] }));
    expect(await removed).toEqual([[b]]);
    expect(membership.isMember(a) && !membership.isMember(b)).toBe(true);
  });

  it('refuses a list sealed with another key, for another connection, or out of order', async () => {
    const c = await fakeControl();
    const membership = Membership.tailnet();
    const lines = feed(c.url, membership);
    const otherSecret = sharedSecret(generateKeyPair().privateKey, relay.publicKey);
    const bad: Array<(nonce: string) => string> = [
      (nonce) => sealRelayMembers(otherSecret, nonce, { seq: 6, keys: [b] }),
      () => sealRelayMembers(secret, 'x'.repeat(43), { seq: 6, keys: [b] }),
      (nonce) => sealRelayMembers(secret, nonce, { seq: 5, keys: [b] }),
    ];
    for (const [i, seal] of bad.entries()) {
      // Each refusal closes the line; the relay dials again with a fresh nonce.
      await until('a connection', () => c.sessions.length === i + 1);
      const s = c.sessions[i] as Session;
      s.ws.send(sealRelayMembers(secret, s.nonce, { seq: 5, keys: [a] }));
      await until('the good list', () => membership.isMember(a));
      const closed = once(s.ws, 'close');
      s.ws.send(seal(s.nonce));
      const [code] = (await closed) as [number];
      expect(code, `case ${i}`).toBe(1008);
      expect(membership.isMember(b), `case ${i}`).toBe(false);
      expect(membership.isMember(a), `case ${i}`).toBe(true);
    }
    expect(lines.filter((l) => l.includes('refused a member list'))).toHaveLength(3);
  });

  it('keeps the last list while control is away, and takes the next one when it is back', async () => {
    const c = await fakeControl();
    const membership = Membership.tailnet();
    feed(c.url, membership);
    await until('the relay to connect', () => c.sessions.length === 1);
    const s = c.sessions[0] as Session;
    s.ws.send(sealRelayMembers(secret, s.nonce, { seq: 1, keys: [a] }));
    await until('the list', () => membership.isMember(a));
    s.ws.terminate();
    await new Promise((r) => setTimeout(r, 200));
    expect(membership.isMember(a)).toBe(true);
    await until('a reconnect', () => c.sessions.length >= 2);
    const next = c.sessions.at(-1) as Session;
    next.ws.send(sealRelayMembers(secret, next.nonce, { seq: 1, keys: [b] }));
    await until('the new list', () => membership.isMember(b) && !membership.isMember(a));
  });

  it('serves the last list after a restart while control is away, and only a list control sealed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-relay-feed-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const cache = join(dir, 'members.json');
    const c = await fakeControl();
    const first = Membership.tailnet();
    feed(c.url, first, cache);
    await until('the relay to connect', () => c.sessions.length === 1);
    const s = c.sessions[0] as Session;
    s.ws.send(sealRelayMembers(secret, s.nonce, { seq: 1, keys: [a] }));
    await until('the list kept', () => {
      try {
        return readFileSync(cache, 'utf8').includes(s.nonce);
      } catch {
        return false;
      }
    });
    expect(statSync(cache).mode & 0o777).toBe(0o600);

    // A restarted relay whose control does not answer (nothing listens on port 9).
    const restarted = Membership.tailnet();
    const lines = feed('http://127.0.0.1:9', restarted, cache);
    expect(restarted.known && restarted.isMember(a) && !restarted.isMember(b)).toBe(true);
    expect(lines[0]).toMatch(/serving the last list from control \(1 node keys\)/);

    // An edited file is not control's list: nobody is served from it.
    const kept = JSON.parse(readFileSync(cache, 'utf8')) as { nonce: string; message: string };
    const sealed = JSON.parse(kept.message) as { payload: string; mac: string };
    sealed.payload = JSON.stringify({ seq: 1, keys: [a, b] });
    writeFileSync(cache, JSON.stringify({ ...kept, message: JSON.stringify(sealed) }));
    const edited = Membership.tailnet();
    const editedLines = feed('http://127.0.0.1:9', edited, cache);
    expect(edited.known).toBe(false);
    expect(editedLines[0]).toMatch(/ignoring .*members\.json: member message not sealed by control/);
  });
});
