import net from 'node:net';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { decompress } from 'fzstd';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, startTestControl, type TestControl } from '../testing/harness.js';
import { connectTs2021, initiate, TsTestClient } from '../testing/tailscale-client.js';
import { MAX_NOISE_BODY_BYTES } from './noise-api.js';

afterEach(cleanupAll);

/** Sends raw bytes; returns what control answered and whether it closed the connection (bounded wait). */
async function exchange(t: TestControl, text: string | Buffer): Promise<{ text: string; closed: boolean }> {
  const u = new URL(t.control.url);
  const socket = net.connect(Number(u.port), u.hostname);
  const chunks: Buffer[] = [];
  socket.on('data', (c) => chunks.push(c));
  socket.write(text);
  const closed = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(false);
    }, 3000);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  return { text: Buffer.concat(chunks).toString('latin1'), closed };
}

const raw = async (t: TestControl, text: string | Buffer) => (await exchange(t, text)).text;

const upgrade = (handshake: string) =>
  `POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n` +
  `X-Tailscale-Handshake: ${handshake}\r\n\r\n`;

async function controlKey(t: TestControl): Promise<Uint8Array> {
  const body = (await (await fetch(`${t.control.url}/key?v=130`)).json()) as { publicKey: string };
  return new Uint8Array(Buffer.from(body.publicKey.slice(5), 'hex'));
}

async function nodeCount(t: TestControl): Promise<number> {
  return (JSON.parse((await t.cli('nodes', 'list', '--json')).out) as unknown[]).length;
}

describe('GET /key', () => {
  it('hands out a Noise key that stays the same across restarts', async () => {
    const t = await startTestControl();
    const res = await fetch(`${t.control.url}/key?v=116`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { publicKey: string; legacyPublicKey: string };
    expect(body.publicKey).toMatch(/^mkey:[0-9a-f]{64}$/);
    expect(body.legacyPublicKey).toBe(`mkey:${'0'.repeat(64)}`);
    // It is not Weft's own control key.
    expect(Buffer.from(body.publicKey.slice(5), 'hex').toString('base64')).not.toBe(t.controlPublicKey);
    await t.control.close();
    const again = await startTestControl({ config: { db: t.db } });
    expect(
      ((await (await fetch(`${again.control.url}/key`)).json()) as { publicKey: string }).publicKey,
    ).toBe(body.publicKey);
  });
});

describe('/ts2021', () => {
  it('upgrades, completes the handshake, sends the early payload, then serves HTTP/2', async () => {
    const t = await startTestControl();
    const u = new URL(t.control.url);
    const conn = await connectTs2021({
      host: u.hostname,
      port: Number(u.port),
      machinePrivate: x25519.utils.randomSecretKey(),
      controlPublic: await controlKey(t),
    });
    expect(conn.early).toEqual({ NodeKeyChallenge: expect.stringMatching(/^chalpub:[0-9a-f]{64}$/) });
    // Endpoints of Tailscale's protocol that Weft does not serve answer 501, as Headscale's do.
    const unsupported = await conn.post('/machine/set-dns', {});
    expect(unsupported.status).toBe(501);
    expect(unsupported.body.toString()).toMatch(/not implemented/);
    conn.close();
  });

  it('serves a map stream in zstd frames that a zstd decoder reads', async () => {
    const t = await startTestControl();
    const client = new TsTestClient(t.control.url);
    expect(await client.register({ Auth: { AuthKey: await t.key('--reusable') } })).toMatchObject({
      MachineAuthorized: true,
    });
    const map = await client.map({ Compress: 'zstd' }, decompress);
    await map.until('the first map', (m) => m.self !== null);
    expect(map.self).toMatchObject({
      Name: 'ts-laptop.weft.internal.',
      Addresses: ['100.64.0.1/32', expect.any(String)],
    });
    client.close();
  });

  it('refuses garbage, a wrong key and truncated handshakes with clear errors, storing nothing', async () => {
    const t = await startTestControl();
    const key = await controlKey(t);
    const machine = x25519.utils.randomSecretKey();

    expect(await raw(t, 'GARBAGE\r\n\r\n')).toMatch(/^HTTP\/1.1 400/);
    const notBase64 = await raw(t, upgrade('%%%not-base64%%%'));
    expect(notBase64).toMatch(/^HTTP\/1.1 400/);
    expect(notBase64).toMatch(/not base64/);
    const otherProtocol = await raw(
      t,
      'POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: smtp\r\nConnection: upgrade\r\n\r\n',
    );
    expect(otherProtocol).toMatch(/400[\s\S]*unknown next protocol/);

    const wrongKey = initiate(machine, x25519.getPublicKey(x25519.utils.randomSecretKey()), 1);
    const wrong = await raw(t, upgrade(Buffer.from(wrongKey.message).toString('base64')));
    expect(wrong).toMatch(/^HTTP\/1.1 400[\s\S]*fetch \/key again/);

    const good = initiate(machine, key, 1);
    const truncated = await raw(t, upgrade(Buffer.from(good.message.slice(0, 50)).toString('base64')));
    expect(truncated).toMatch(/^HTTP\/1.1 400[\s\S]*wrong handshake initiation size/);

    // Without the header, the initiation comes after the switch: a short one is dropped unanswered.
    const headerless = await raw(
      t,
      Buffer.concat([
        Buffer.from(
          'POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n\r\n',
        ),
        Buffer.alloc(101, 7),
      ]),
    );
    expect(headerless).toMatch(/^HTTP\/1.1 101/);
    expect(headerless).toMatch(/unexpected handshake message type/);

    expect(await nodeCount(t)).toBe(0);
    expect((await fetch(`${t.control.url}/healthz`)).status).toBe(200);
  });

  it('drops a connection whose records do not decrypt, and stays up', async () => {
    const t = await startTestControl();
    const key = await controlKey(t);
    const init = initiate(x25519.utils.randomSecretKey(), key, 1);
    const answer = await exchange(
      t,
      Buffer.concat([
        Buffer.from(upgrade(Buffer.from(init.message).toString('base64'))),
        // A record frame of garbage where the HTTP/2 preface should be.
        Buffer.from([4, 0, 40]),
        Buffer.alloc(40, 0xaa),
      ]),
    );
    expect(answer.text).toMatch(/^HTTP\/1.1 101/);
    expect(answer.closed).toBe(true);
    expect((await fetch(`${t.control.url}/healthz`)).status).toBe(200);
    expect(await nodeCount(t)).toBe(0);
  });

  it('closes a connection that speaks garbage instead of HTTP/2 inside valid records', async () => {
    const t = await startTestControl();
    const init = initiate(x25519.utils.randomSecretKey(), await controlKey(t), 1);
    const u = new URL(t.control.url);
    const socket = net.connect(Number(u.port), u.hostname);
    let received = Buffer.alloc(0);
    socket.on('data', (c) => {
      received = Buffer.concat([received, c]);
    });
    socket.write(upgrade(Buffer.from(init.message).toString('base64')));
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    // Once the 101, the response frame and the early payload are in, send a well-sealed record of
    // bytes that are no HTTP/2 preface.
    for (let i = 0; i < 40 && !received.includes('\r\n\r\n'); i++)
      await new Promise((r) => setTimeout(r, 50));
    const headerEnd = received.indexOf('\r\n\r\n') + 4;
    for (let i = 0; i < 40 && received.length < headerEnd + 51; i++)
      await new Promise((r) => setTimeout(r, 50));
    const [tx] = init.finish(received.subarray(headerEnd, headerEnd + 51));
    const sealed = chacha20poly1305(tx, new Uint8Array(12)).encrypt(
      Buffer.from('NOT HTTP/2 AT ALL\r\n\r\n'.repeat(3)),
    );
    socket.write(Buffer.concat([Buffer.from([4, 0, sealed.length]), sealed]));
    await closed;
    expect((await fetch(`${t.control.url}/healthz`)).status).toBe(200);
    expect(await nodeCount(t)).toBe(0);
  });

  it('refuses an oversized map request and a client below the supported version, server up', async () => {
    const t = await startTestControl();
    const client = new TsTestClient(t.control.url);
    await client.register({ Auth: { AuthKey: await t.key() } });
    const conn = await client.connection();
    const huge = await conn.post('/machine/map', {
      Version: 130,
      NodeKey: client.nodeKey,
      Hostinfo: { Hostname: 'x'.repeat(MAX_NOISE_BODY_BYTES) },
    });
    expect(huge.status).toBe(413);
    const bad = await conn.post('/machine/map', { Version: 130, NodeKey: 'nodekey:zz' });
    expect(bad.status).toBe(400);
    expect(bad.body.toString()).toMatch(/NodeKey/);

    const old = new TsTestClient(t.control.url, 100);
    const refused = await old.register({ Auth: { AuthKey: await t.key() } });
    expect(refused).toMatchObject({ MachineAuthorized: false });
    expect(refused.Error).toMatch(/too old \(capability version 100\).*v1\.84/);
    const oldMap = await (await old.connection()).post('/machine/map', {
      Version: 100,
      NodeKey: old.nodeKey,
    });
    expect(oldMap.status).toBe(400);
    expect(oldMap.body.toString()).toMatch(/too old/);
    expect(await nodeCount(t)).toBe(1);
    expect((await fetch(`${t.control.url}/healthz`)).status).toBe(200);
    client.close();
    old.close();
  });
});
