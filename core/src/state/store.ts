import { randomInt } from 'node:crypto';
import { chmod, mkdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, Key, Prefs, publicKeyOf, StoredPrefs, withDefaults } from '@weft/protocol';
import type { z } from 'zod';
import { WeftError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';
import { CachedNetmap, ControlKeyPin, LISTEN_PORT_MAX, LISTEN_PORT_MIN, Login } from './schemas.js';

// The engine's state folder. Everything in it is owner-only: the keys are secrets, and the
// netmap and prefs describe the tailnet to whoever can read them.
//
//   machine.key   identifies this machine to control (kept across logouts)
//   node.key      the WireGuard private key (forgotten on logout, rotated on a schedule)
//   node-next.key the key a rotation in flight moves to; kept until control's answer is recorded,
//                 so a crash mid-rotation is finished at the next start, never leaves a key lost
//   prefs.json    Prefs; login.json  Login
//   netmap.json   CachedNetmap: the last netmap and its map token, to come up without control and
//                 have control resume the map rather than send it whole
//   control-key.json  ControlKeyPin: control's key as first seen (kept across logouts)

export type KeyName = 'machine' | 'node' | 'node-next';

export interface KeyHandle {
  privateKey: string;
  publicKey: string;
}

export class StateStore {
  constructor(readonly dir: string) {}

  /** Creates the folder 0700, and tightens it if it exists with looser modes. */
  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const st = await stat(this.dir);
    if (!st.isDirectory()) throw new WeftError('state-error', `state dir ${this.dir} is not a directory`);
    if ((st.mode & 0o777) !== 0o700) await chmod(this.dir, 0o700);
  }

  private path(name: string): string {
    return join(this.dir, name);
  }

  private async readText(name: string): Promise<string | null> {
    try {
      return await readFile(this.path(name), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  private async readJson<T>(name: string, schema: z.ZodType<T>): Promise<T | null> {
    const text = await this.readText(name);
    if (text === null) return null;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new WeftError('state-error', `${this.path(name)} is not valid JSON`);
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      throw new WeftError('state-error', `${this.path(name)} is invalid: ${parsed.error.issues[0]?.message}`);
    }
    return parsed.data;
  }

  private writeJson(name: string, value: unknown): Promise<void> {
    return writeFileAtomic(this.path(name), `${JSON.stringify(value, null, 2)}\n`);
  }

  async loadKey(name: KeyName): Promise<KeyHandle | null> {
    const text = await this.readText(`${name}.key`);
    if (text === null) return null;
    const privateKey = text.trim();
    if (!Key.safeParse(privateKey).success) {
      throw new WeftError('state-error', `${this.path(`${name}.key`)} does not hold a valid key`);
    }
    return { privateKey, publicKey: publicKeyOf(privateKey) };
  }

  async loadOrCreateKey(name: KeyName): Promise<KeyHandle> {
    const existing = await this.loadKey(name);
    if (existing) return existing;
    const pair = generateKeyPair();
    await writeFileAtomic(this.path(`${name}.key`), `${pair.privateKey}\n`);
    return pair;
  }

  /** Writes a key (atomically: a crash leaves the old or the new one). */
  async saveKey(name: KeyName, key: KeyHandle): Promise<void> {
    await writeFileAtomic(this.path(`${name}.key`), `${key.privateKey}\n`);
  }

  async deleteKey(name: KeyName): Promise<void> {
    await rm(this.path(`${name}.key`), { force: true });
  }

  /** Reads prefs, creating them (with a random listen port) on first run. */
  async loadPrefs(): Promise<Prefs> {
    const prefs = await this.readJson('prefs.json', StoredPrefs);
    if (prefs) return withDefaults(prefs);
    const fresh = withDefaults({
      controlUrl: null,
      hostname: null,
      wantRunning: false,
      listenPort: randomInt(LISTEN_PORT_MIN, LISTEN_PORT_MAX + 1),
    });
    await this.savePrefs(fresh);
    return fresh;
  }

  savePrefs(prefs: Prefs): Promise<void> {
    return this.writeJson('prefs.json', Prefs.parse(prefs));
  }

  loadLogin(): Promise<Login | null> {
    return this.readJson('login.json', Login);
  }

  saveLogin(login: Login): Promise<void> {
    return this.writeJson('login.json', Login.parse(login));
  }

  async deleteLogin(): Promise<void> {
    await rm(this.path('login.json'), { force: true });
  }

  loadControlKeyPin(): Promise<ControlKeyPin | null> {
    return this.readJson('control-key.json', ControlKeyPin);
  }

  saveControlKeyPin(pin: ControlKeyPin): Promise<void> {
    return this.writeJson('control-key.json', ControlKeyPin.parse(pin));
  }

  loadNetmap(): Promise<CachedNetmap | null> {
    return this.readJson('netmap.json', CachedNetmap);
  }

  saveNetmap(cached: CachedNetmap): Promise<void> {
    return this.writeJson('netmap.json', cached);
  }

  async deleteNetmap(): Promise<void> {
    await rm(this.path('netmap.json'), { force: true });
  }
}
