import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Status, UpRequest } from '@weft/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalApiServer } from '../localapi/server.js';
import { silentLogger } from '../log/logger.js';

// `weft up` as a user runs it (the built CLI, a child process) against a LocalAPI that records what
// it is asked: where the auth key comes from, and plain http refused to a remote control.

const CLI = resolve(import.meta.dirname, '../../dist/cli/main.js');

let dir: string;
let api: LocalApiServer;
let ups: UpRequest[];

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'weft-up-'));
  ups = [];
  const st: Status = {
    backendState: 'Running',
    controlUrl: null,
    authUrl: null,
    self: { id: 'n1', name: 'laptop', addresses: ['100.64.0.1'] },
    peers: [],
    health: [],
  };
  api = new LocalApiServer(
    {
      status: async () => st,
      up: async (req) => {
        ups.push(req);
      },
      down: async () => {},
      logout: async () => {},
      watch: () => () => {},
    },
    silentLogger,
  );
  await api.listen(join(dir, 'weftd.sock'));
});

afterEach(async () => {
  await api.close();
  rmSync(dir, { recursive: true, force: true });
});

function weft(args: string[], input = ''): Promise<{ code: number | null; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [CLI, '--socket', join(dir, 'weftd.sock'), ...args]);
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    child.on('close', (code) => done({ code, stderr }));
    child.stdin.end(input);
  });
}

describe('weft up', () => {
  it('refuses plain http to a control that is not on this machine unless --insecure-http', async () => {
    const refused = await weft(['up', '--control-url', 'http://198.18.0.1:8080', '--authkey', 'k']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /^weft: refusing plain http to 198\.18\.0\.1:8080: .*pass --insecure-http/,
    );
    expect(ups).toEqual([]);

    expect(
      (await weft(['up', '--control-url', 'http://198.18.0.1:8080', '--authkey', 'k', '--insecure-http']))
        .code,
    ).toBe(0);
    expect((await weft(['up', '--control-url', 'http://127.0.0.1:8080', '--authkey', 'k'])).code).toBe(0);
    expect((await weft(['up', '--control-url', 'http://[::1]:8080', '--authkey', 'k'])).code).toBe(0);
    expect((await weft(['up', '--control-url', 'https://198.18.0.1', '--authkey', 'k'])).code).toBe(0);
    expect(ups.map((u) => u.controlUrl)).toEqual([
      'http://198.18.0.1:8080',
      'http://127.0.0.1:8080',
      'http://[::1]:8080',
      'https://198.18.0.1',
    ]);
  });

  it('reads the auth key from --authkey-file, --authkey file:PATH and --authkey - (stdin)', async () => {
    const file = join(dir, 'key');
    writeFileSync(file, 'tskey-from-file\n', { mode: 0o600 });
    const url = ['--control-url', 'https://198.18.0.1'];
    expect((await weft(['up', ...url, '--authkey-file', file])).code).toBe(0);
    expect((await weft(['up', ...url, '--authkey', `file:${file}`])).code).toBe(0);
    expect((await weft(['up', ...url, '--authkey', '-'], 'tskey-from-stdin\n')).code).toBe(0);
    expect((await weft(['up', ...url, '--authkey', 'tskey-in-argv'])).code).toBe(0);
    expect(ups.map((u) => u.authKey)).toEqual([
      'tskey-from-file',
      'tskey-from-file',
      'tskey-from-stdin',
      'tskey-in-argv',
    ]);

    const missing = await weft(['up', ...url, '--authkey-file', join(dir, 'nope')]);
    expect(missing).toEqual({
      code: 1,
      stderr: `weft: cannot read the auth key file ${join(dir, 'nope')}: ENOENT\n`,
    });
    const empty = await weft(['up', ...url, '--authkey', '-'], '\n');
    expect(empty).toEqual({ code: 1, stderr: 'weft: standard input must hold exactly one auth key\n' });
    expect(ups).toHaveLength(4);
  });

  it('passes --accept-new-control-key to the engine', async () => {
    expect((await weft(['up', '--control-url', 'https://198.18.0.1', '--accept-new-control-key'])).code).toBe(
      0,
    );
    expect(ups).toEqual([{ controlUrl: 'https://198.18.0.1', acceptNewControlKey: true }]);
  });
});
