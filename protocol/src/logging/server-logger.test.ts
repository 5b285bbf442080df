import { describe, expect, it } from 'vitest';
import { serverLogger, withoutUrlPasswords } from './server-logger.js';

/** A logger writing into an array, one entry per line. */
function capture(format: 'text' | 'json', level: 'info' | 'warn' = 'info') {
  const lines: string[] = [];
  const log = serverLogger({
    name: 'weft-test',
    format,
    level,
    destination: { write: (s: string) => lines.push(s) },
  });
  return { log, lines };
}

describe('server logs', () => {
  it('write one JSON event per line with time, level, name and message', () => {
    const { log, lines } = capture('json');
    log.warn('relay 198.51.100.7 unreachable');
    expect(lines).toHaveLength(1);
    const event = JSON.parse(lines[0] as string);
    expect(event).toMatchObject({ level: 'warn', name: 'weft-test', msg: 'relay 198.51.100.7 unreachable' });
    expect(Date.parse(event.time)).not.toBeNaN();
  });

  it('write text as TIME LEVEL message, other fields as key=value', () => {
    const { log, lines } = capture('text');
    log.info({ node: 'a' }, 'connected');
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z info connected node=a\n$/);
  });

  it('leave out events below the level', () => {
    const { log, lines } = capture('text', 'warn');
    log.info('not shown');
    log.error('shown');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/ error shown\n$/);
  });

  it('hide URL passwords in messages and secret fields in objects', () => {
    const { log, lines } = capture('json');
    log.error('cannot reach postgres://weft:s3cret@db.example.com/weft: refused');
    log.info({ password: 'p4ss', config: { privateKey: 'k3y' } }, 'started');
    const all = lines.join('');
    expect(all).toContain('postgres://weft:***@db.example.com/weft');
    for (const secret of ['s3cret', 'p4ss', 'k3y']) expect(all).not.toContain(secret);
  });

  it('hide nested secret fields and password parameters', () => {
    const { log, lines } = capture('json');
    log.info(
      { relay: { token: 't0k' }, request: { body: { authKey: 'a1k', secret: 's2c' } } },
      'cannot reach postgres://db.example.com/weft?user=weft&password=q9ss&sslmode=require',
    );
    log.warn('connecting with host=db.example.com password=d5n dbname=weft');
    const all = lines.join('');
    expect(all).toContain('?user=weft&password=***&sslmode=require');
    expect(all).toContain('host=db.example.com password=*** dbname=weft');
    for (const secret of ['t0k', 'a1k', 's2c', 'q9ss', 'd5n']) expect(all).not.toContain(secret);
  });

  it('leave URLs without a password alone', () => {
    expect(withoutUrlPasswords('see https://control.example.com:8443/a and postgres://weft@h/db')).toBe(
      'see https://control.example.com:8443/a and postgres://weft@h/db',
    );
  });
});
