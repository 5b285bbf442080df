import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, tempDir } from '../testing/harness.js';
import { ConfigError, loadConfig, parseListen } from './config.js';
import { parseDuration } from './duration.js';

afterEach(cleanupAll);

describe('configuration', () => {
  it('uses defaults when nothing is given', () => {
    expect(loadConfig({ flags: {}, env: {}, cwd: '/srv' })).toEqual({
      listen: { host: '127.0.0.1', port: 8080 },
      publicUrl: null,
      db: '/srv/weft-control.db',
      nodeKeyExpiryMs: 180 * 86_400_000,
      loginExpiryMs: 10 * 60_000,
      oidc: null,
      github: null,
      allow: { domains: [], users: [], groups: [] },
      policyFile: null,
      metricsListen: null,
      log: { format: 'text', level: 'info' },
    });
  });

  it('reads the metrics listener and log settings, and refuses an unknown log format', () => {
    const config = loadConfig({
      flags: { metricsListen: '127.0.0.1:9464', logFormat: 'json' },
      env: { WEFT_CONTROL_LOG_LEVEL: 'warn' },
      cwd: '/',
    });
    expect(config.metricsListen).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(config.log).toEqual({ format: 'json', level: 'warn' });
    expect(() => loadConfig({ flags: { logFormat: 'xml' }, env: {}, cwd: '/' })).toThrow(
      /command line:\n {2}--log-format: Invalid option: expected one of "text"\|"json"/,
    );
  });

  it('reads a policy file path relative to the config file', () => {
    const dir = tempDir();
    const file = join(dir, 'control.json');
    writeFileSync(file, JSON.stringify({ policyFile: 'policy.hujson' }));
    expect(loadConfig({ flags: { config: file }, env: {}, cwd: '/' }).policyFile).toBe(
      join(dir, 'policy.hujson'),
    );
    expect(loadConfig({ flags: { policyFile: 'p.hujson' }, env: {}, cwd: '/w' }).policyFile).toBe(
      '/w/p.hujson',
    );
  });

  it('takes flags over environment over file over defaults', () => {
    const dir = tempDir();
    const file = join(dir, 'control.json');
    writeFileSync(
      file,
      JSON.stringify({ listen: '0.0.0.0:1000', publicUrl: 'https://file.example/', db: 'data/c.db' }),
    );
    const env = {
      WEFT_CONTROL_CONFIG: file,
      WEFT_CONTROL_LISTEN: '127.0.0.1:2000',
      WEFT_CONTROL_DB: 'env.db',
    };

    // File only: its relative db path is relative to the file itself.
    expect(loadConfig({ flags: {}, env: { WEFT_CONTROL_CONFIG: file }, cwd: '/elsewhere' })).toMatchObject({
      listen: { host: '0.0.0.0', port: 1000 },
      publicUrl: 'https://file.example',
      db: join(dir, 'data/c.db'),
    });
    // Environment over file, keys the environment lacks still from the file.
    expect(loadConfig({ flags: {}, env, cwd: '/w' })).toMatchObject({
      listen: { host: '127.0.0.1', port: 2000 },
      publicUrl: 'https://file.example',
      db: '/w/env.db',
    });
    // Flags over both.
    expect(
      loadConfig({
        flags: { listen: '[::1]:3000', db: 'flag.db', publicUrl: 'http://x.test:3000' },
        env,
        cwd: '/w',
      }),
    ).toMatchObject({
      listen: { host: '::1', port: 3000 },
      publicUrl: 'http://x.test:3000',
      db: '/w/flag.db',
    });
    // --config beats WEFT_CONTROL_CONFIG.
    const other = join(dir, 'other.json');
    writeFileSync(other, JSON.stringify({ listen: 'localhost:4000' }));
    expect(
      loadConfig({ flags: { config: other }, env: { WEFT_CONTROL_CONFIG: file }, cwd: '/' }).listen,
    ).toEqual({
      host: 'localhost',
      port: 4000,
    });
  });

  it('names the source and the key of a bad value', () => {
    const dir = tempDir();
    const bad = (args: Parameters<typeof loadConfig>[0]) => {
      try {
        loadConfig(args);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as Error).message;
      }
      throw new Error('accepted');
    };
    expect(bad({ flags: { listen: '8080' }, env: {}, cwd: dir })).toMatch(
      /command line:\n {2}--listen: must be HOST:PORT/,
    );
    expect(bad({ flags: {}, env: { WEFT_CONTROL_PUBLIC_URL: 'ftp://x' }, cwd: dir })).toMatch(
      /environment:\n {2}WEFT_CONTROL_PUBLIC_URL: must be an http/,
    );
    const file = join(dir, 'c.json');
    writeFileSync(file, '{"listen": "1.2.3.4:80", "lisen": 1}');
    expect(bad({ flags: { config: file }, env: {}, cwd: dir })).toMatch(/config file .*c\.json.*\n.*lisen/);
    writeFileSync(file, '{nope');
    expect(bad({ flags: { config: file }, env: {}, cwd: dir })).toMatch(/not valid JSON/);
    expect(bad({ flags: { config: join(dir, 'missing.json') }, env: {}, cwd: dir })).toMatch(
      /cannot read config file/,
    );
  });

  it('reads sign-in and key settings from flags, environment and file, with paths relative to the file', () => {
    const dir = tempDir();
    const file = join(dir, 'control.json');
    writeFileSync(
      file,
      JSON.stringify({
        oidcIssuer: 'https://login.example.com/realms/weft',
        oidcClientId: 'weft',
        oidcClientSecretFile: 'secrets/oidc',
        oidcAllowedDomains: ['Example.com', '@corp.example'],
        oidcGroupsClaim: 'roles',
        githubClientId: 'Iv1.abc',
        githubClientSecretFile: '/etc/weft/github',
      }),
    );
    const config = loadConfig({
      flags: { config: file, nodeKeyExpiry: '30d', oidcAllowedUsers: 'Ann@x.com, bob@y.com' },
      env: { WEFT_CONTROL_OIDC_ALLOWED_GROUPS: 'admins,ops', WEFT_CONTROL_LOGIN_EXPIRY: '5m' },
      cwd: '/',
    });
    expect(config).toMatchObject({
      nodeKeyExpiryMs: 30 * 86_400_000,
      loginExpiryMs: 5 * 60_000,
      oidc: {
        issuer: 'https://login.example.com/realms/weft',
        clientId: 'weft',
        clientSecretFile: join(dir, 'secrets/oidc'),
        groupsClaim: 'roles',
        scopes: ['openid', 'email', 'profile'],
      },
      github: {
        clientId: 'Iv1.abc',
        clientSecretFile: '/etc/weft/github',
        webUrl: 'https://github.com',
        apiUrl: 'https://api.github.com',
      },
      allow: {
        domains: ['example.com', 'corp.example'],
        users: ['ann@x.com', 'bob@y.com'],
        groups: ['admins', 'ops'],
      },
    });
  });

  it('refuses a half-configured provider and a bad duration, naming the flags', () => {
    expect(() => loadConfig({ flags: { oidcIssuer: 'https://idp.example' }, env: {}, cwd: '/' })).toThrow(
      /--oidc-issuer also needs --oidc-client-id and --oidc-client-secret-file/,
    );
    expect(() =>
      loadConfig({ flags: {}, env: { WEFT_CONTROL_GITHUB_CLIENT_SECRET_FILE: '/x' }, cwd: '/' }),
    ).toThrow(/--github-client-secret-file also needs --github-client-id/);
    expect(() => loadConfig({ flags: { nodeKeyExpiry: '180 days' }, env: {}, cwd: '/' })).toThrow(
      /--node-key-expiry: must be a duration/,
    );
  });

  it('reads the relay map from a flag, the environment or the file, and refuses a bad one', () => {
    const key = 'S4uwJH2LaWv3DukARF0f6+RcY22XjEkutR7nxSTYlmA=';
    const one = { regionId: 1, name: 'fra', url: 'wss://relay-fra.example.com/relay', publicKey: key };
    const two = { regionId: 2, name: 'nyc', url: 'ws://198.18.0.2:8443/relay', publicKey: key };
    const flag = `1,fra,${one.url},${key}; 2,nyc,${two.url},${key}`;
    expect(loadConfig({ flags: { relays: flag }, env: {}, cwd: '/' }).relays).toEqual([one, two]);
    expect(loadConfig({ flags: {}, env: { WEFT_CONTROL_RELAYS: flag }, cwd: '/' }).relays).toEqual([
      one,
      two,
    ]);
    const dir = tempDir();
    const file = join(dir, 'control.json');
    writeFileSync(file, JSON.stringify({ relays: [one] }));
    expect(loadConfig({ flags: { config: file }, env: {}, cwd: '/' }).relays).toEqual([one]);
    expect(loadConfig({ flags: {}, env: {}, cwd: '/' }).relays).toBeUndefined();
    expect(() => loadConfig({ flags: { relays: `1,fra,${one.url}` }, env: {}, cwd: '/' })).toThrow(
      /--relays: relay '1,fra,wss:\/\/relay-fra.example.com\/relay' must be ID,NAME,URL,KEY/,
    );
    expect(() =>
      loadConfig({ flags: { relays: `1,fra,https://x/relay,${key}` }, env: {}, cwd: '/' }),
    ).toThrow(/ws:\/\/ or wss:\/\//);
    expect(() =>
      loadConfig({ flags: { relays: `${flag}; 1,again,${two.url},${key}` }, env: {}, cwd: '/' }),
    ).toThrow(/region ids must be unique/);
    // A fifth field is the relay's STUN port, announced to Tailscale clients.
    expect(
      loadConfig({ flags: { relays: `1,fra,${one.url},${key},3478` }, env: {}, cwd: '/' }).relays,
    ).toEqual([{ ...one, stunPort: 3478 }]);
    expect(() =>
      loadConfig({ flags: { relays: `1,fra,${one.url},${key},99999` }, env: {}, cwd: '/' }),
    ).toThrow(/stunPort: Too big/);
  });

  it('parses listen addresses strictly', () => {
    expect(parseListen('127.0.0.1:0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseListen('[fd00::1]:443')).toEqual({ host: 'fd00::1', port: 443 });
    expect(parseListen('control.example.com:8080')).toEqual({ host: 'control.example.com', port: 8080 });
    for (const bad of [
      '127.0.0.1',
      ':80',
      '1.2.3.4:65536',
      'fd00::1:80',
      '[1.2.3.4]:80',
      'a b:80',
      '01.2.3.4:80x',
    ]) {
      expect(parseListen(bad), bad).toBeNull();
    }
  });

  it('parses durations', () => {
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('7d')).toBe(7 * 86_400_000);
    for (const bad of ['', '1', 'h', '1x', '0s', '-1h', '1.5h']) expect(parseDuration(bad), bad).toBeNull();
  });
});
