import { randomBytes } from 'node:crypto';
import {
  generateKeyPair,
  type KeyPair,
  MACHINE_AUTH_HEADER,
  openRelayMembers,
  RELAY_MEMBERS_PATH,
  type RelayMembers,
  sharedSecret,
  signMachineRequest,
} from '@weft/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { cleanupAll, startTestControl, type TestControl, TestMachine } from '../testing/harness.js';

// Control's members feed as a relay sees it: the relay's end is written here from the protocol
// (relay/src/control-feed.ts is the real one; e2e/tests/relay-trust.test.ts runs both binaries).

const sockets: WebSocket[] = [];
afterEach(async () => {
  for (const ws of sockets.splice(0)) ws.terminate();
  await cleanupAll();
});

const relayKeys = generateKeyPair();

async function control(): Promise<TestControl> {
  return startTestControl({
    config: {
      relays: [{ regionId: 1, name: 'one', url: 'ws://127.0.0.1:1/relay', publicKey: relayKeys.publicKey }],
    },
  });
}

/** Opens the feed as `keys`; resolves with the WebSocket and every member list it receives. */
function feed(t: TestControl, keys: KeyPair, nonce = randomBytes(32).toString('base64url')) {
  const signature = signMachineRequest({
    machinePrivateKey: keys.privateKey,
    controlPublicKey: t.controlPublicKey,
    method: 'GET',
    path: RELAY_MEMBERS_PATH,
    body: '',
  });
  const ws = new WebSocket(`${t.control.url.replace(/^http/, 'ws')}${RELAY_MEMBERS_PATH}?nonce=${nonce}`, {
    headers: { [MACHINE_AUTH_HEADER]: signature },
  });
  const secret = sharedSecret(keys.privateKey, t.controlPublicKey);
  const lists: RelayMembers[] = [];
  const errors: string[] = [];
  ws.on('message', (data) => {
    const opened = openRelayMembers(secret, nonce, String(data));
    if ('error' in opened) errors.push(opened.error);
    else lists.push(opened.members);
  });
  const refused = new Promise<{ status: number; body: string }>((resolve) => {
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => {
        body += c.toString();
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
  });
  ws.on('error', () => {});
  sockets.push(ws);
  return { ws, lists, errors, refused, nonce, secret };
}

async function until(what: string, check: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('relay members feed', () => {
  it('pushes every valid node key to a relay of the map, and again when a node is deleted or expires', async () => {
    const t = await control();
    const key = await t.key('--reusable');
    const [a, b, c] = [new TestMachine(t), new TestMachine(t), new TestMachine(t)];
    await a.join('a', key);
    await b.join('b', key);
    const f = feed(t, relayKeys);
    await until('the first list', () => f.lists.length === 1);
    expect(f.lists[0]).toEqual({ seq: 1, keys: [a.nodeKey, b.nodeKey].sort() });

    await c.join('c', key);
    await until('c added', () => f.lists.at(-1)?.keys.includes(c.nodeKey) === true);
    expect((await t.cli('nodes', 'delete', 'a')).code).toBe(0);
    await until('a removed', () => f.lists.at(-1)?.keys.includes(a.nodeKey) === false);
    expect((await t.cli('nodes', 'expire', 'b')).code).toBe(0);
    await until('b removed', () => f.lists.at(-1)?.keys.includes(b.nodeKey) === false);
    expect(f.lists.at(-1)?.keys).toEqual([c.nodeKey]);
    expect(f.lists.map((l) => l.seq)).toEqual(f.lists.map((_, i) => i + 1));
    expect(f.errors).toEqual([]);
  });

  it('refuses a key that is not a relay of the map, a bad signature and a missing nonce', async () => {
    const t = await control();
    const stranger = feed(t, generateKeyPair());
    expect(await stranger.refused).toMatchObject({ status: 403 });
    expect((await stranger.refused).body).toMatch(/not a relay of this control/);

    const forged = new WebSocket(`${t.control.url.replace(/^http/, 'ws')}${RELAY_MEMBERS_PATH}?nonce=x`, {
      headers: { [MACHINE_AUTH_HEADER]: `${relayKeys.publicKey}.${Math.floor(Date.now() / 1000)}.AAAA` },
    });
    forged.on('error', () => {});
    sockets.push(forged);
    const status = await new Promise((r) =>
      forged.on('unexpected-response', (_req, res) => r(res.statusCode)),
    );
    expect(status).toBe(401);

    const noNonce = feed(t, relayKeys, 'short');
    expect(await noNonce.refused).toMatchObject({ status: 400 });
  });

  it('seals each list for its connection: another nonce or another relay key cannot open it', async () => {
    const t = await control();
    const f = feed(t, relayKeys);
    const raw: string[] = [];
    f.ws.on('message', (d) => raw.push(String(d)));
    await until('the first list', () => raw.length === 1);
    const text = raw[0] as string;
    expect('members' in openRelayMembers(f.secret, f.nonce, text)).toBe(true);
    expect(openRelayMembers(f.secret, randomBytes(32).toString('base64url'), text)).toEqual({
      error: 'member message not sealed by control',
    });
    const otherSecret = sharedSecret(generateKeyPair().privateKey, t.controlPublicKey);
    expect('error' in openRelayMembers(otherSecret, f.nonce, text)).toBe(true);
    const tampered = JSON.parse(text) as { payload: string; mac: string };
    tampered.payload = JSON.stringify({ seq: 1, keys: [generateKeyPair().publicKey] });
    expect('error' in openRelayMembers(f.secret, f.nonce, JSON.stringify(tampered))).toBe(true);
  });
});
