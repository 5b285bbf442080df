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
    });
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
    expect(loadConfig({ flags: {}, env: { WEFT_CONTROL_CONFIG: file }, cwd: '/elsewhere' })).toEqual({
      listen: { host: '0.0.0.0', port: 1000 },
      publicUrl: 'https://file.example',
      db: join(dir, 'data/c.db'),
    });
    // Environment over file, keys the environment lacks still from the file.
    expect(loadConfig({ flags: {}, env, cwd: '/w' })).toEqual({
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
    ).toEqual({ listen: { host: '::1', port: 3000 }, publicUrl: 'http://x.test:3000', db: '/w/flag.db' });
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
