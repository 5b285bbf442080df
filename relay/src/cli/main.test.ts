import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

// The built weft-relay binary's refusals of settings that leave whom it serves unsaid or wrong.

const BIN = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'weft-relay-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function serve(...flags: string[]) {
  if (!existsSync(BIN)) throw new Error(`${BIN} is not built: run npm run build`);
  const r = spawnSync(
    process.execPath,
    [BIN, 'serve', '--listen', '127.0.0.1:0', '--reflector-port', '0', '--state-dir', dir, ...flags],
    { encoding: 'utf8', timeout: 20_000 },
  );
  return { code: r.status, err: r.stderr };
}

const KEY = Buffer.alloc(32, 7).toString('base64');

describe('weft-relay serve', () => {
  it('refuses to start without being told whom to serve', () => {
    const r = serve();
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(
      'say whom to serve: --control-url URL --control-key KEY (one tailnet), or --open',
    );
  });

  it('refuses half or malformed control settings, and both at once', () => {
    expect(serve('--control-url', 'https://control.example').err).toContain(
      '--control-url and --control-key go together',
    );
    expect(serve('--control-url', 'ftp://x', '--control-key', KEY).err).toContain(
      'must be an http:// or https:// URL',
    );
    expect(serve('--control-url', 'https://control.example', '--control-key', 'nope').err).toContain(
      'must be a 32-byte key in base64',
    );
    expect(serve('--control-url', 'https://control.example', '--control-key', KEY, '--open').err).toContain(
      'say whom to serve',
    );
    expect(serve('--open', '--max-queue-mib', '0').err).toContain('must be a whole number above 0');
    expect(serve('--open', '--stun-port', '70000').err).toContain('must be a port number');
  });

  it('names its DERP URL and, with --stun-port, its STUN port on the line it prints at start', async () => {
    const child = spawn(
      process.execPath,
      [
        BIN,
        'serve',
        '--listen',
        '127.0.0.1:0',
        '--reflector-port',
        '0',
        '--stun-port',
        '0',
        '--state-dir',
        dir,
        '--open',
      ],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    try {
      const [line] = (await once(child.stdout, 'data')) as [Buffer];
      expect(line.toString()).toMatch(
        /^weft-relay listening on ws:\/\/127\.0\.0\.1:(\d+)\/relay, derp http:\/\/127\.0\.0\.1:\1\/derp, reflector udp 127\.0\.0\.1:\d+, stun udp 127\.0\.0\.1:\d+, key /,
      );
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  });

  it('serves metrics on --metrics-listen and logs JSON events without its private key', async () => {
    expect(serve('--open', '--log-format', 'xml').err).toMatch(/--log-format.*xml.*invalid/i);
    const child = spawn(
      process.execPath,
      [
        BIN,
        'serve',
        ...['--listen', '127.0.0.1:0', '--reflector-port', '0', '--state-dir', dir, '--open'],
        ...['--metrics-listen', '127.0.0.1:0', '--log-format', 'json'],
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let err = '';
    child.stderr.on('data', (d) => {
      err += d;
    });
    try {
      const [line] = (await once(child.stdout, 'data')) as [Buffer];
      const url = /, metrics (http:\/\/127\.0\.0\.1:\d+\/metrics)$/m.exec(line.toString())?.[1];
      if (url === undefined) throw new Error(`no metrics URL in: ${line}`);
      expect(await (await fetch(url)).text()).toMatch(/^weft_relay_connections\{transport="weft"\} 0$/m);
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
    const events = err
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(events).toContainEqual(
      expect.objectContaining({ name: 'weft-relay', level: 'info', msg: 'shutting down' }),
    );
    expect(err).not.toContain(readFileSync(join(dir, 'relay.key'), 'utf8').trim());
  });
});
