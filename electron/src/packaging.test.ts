import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { z } from 'zod';
import { DEEP_LINK_SCHEME } from './deep-link.js';

// electron-builder cannot run here (it downloads Electron and its tools), so CI checks that its
// configuration parses, has the targets the issue asks for, and names only files that exist or
// that the build produces.

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const text = readFileSync(join(ROOT, 'electron-builder.yml'), 'utf8');

const Target = z.array(z.string()).nonempty();
const Config = z.looseObject({
  appId: z.string().regex(/^[a-z][a-z0-9-]*(\.[a-z0-9-]+)+$/),
  productName: z.string(),
  directories: z.strictObject({ output: z.string(), buildResources: z.string() }),
  extraMetadata: z.strictObject({ main: z.string() }),
  files: z.array(z.string()).nonempty(),
  asarUnpack: z.array(z.string()),
  protocols: z.array(z.strictObject({ name: z.string(), schemes: z.array(z.string()) })),
  linux: z.looseObject({
    target: Target,
    icon: z.string(),
    extraResources: z.array(z.strictObject({ from: z.string(), to: z.string() })),
  }),
  deb: z.looseObject({ depends: z.array(z.string()), afterInstall: z.string(), afterRemove: z.string() }),
  rpm: z.looseObject({ depends: z.array(z.string()), afterInstall: z.string(), afterRemove: z.string() }),
  mac: z.looseObject({ target: Target, icon: z.string() }),
  win: z.looseObject({ target: Target, icon: z.string() }),
  nsis: z.looseObject({}),
  dmg: z.looseObject({}),
  appImage: z.looseObject({}),
});
const KNOWN_TOP_LEVEL = new Set([
  'appId',
  'productName',
  'copyright',
  'directories',
  'extraMetadata',
  'asar',
  'asarUnpack',
  'files',
  'protocols',
  'linux',
  'deb',
  'rpm',
  'appImage',
  'mac',
  'dmg',
  'win',
  'nsis',
]);

const config = Config.parse(parse(text));

/** The folder a tsconfig, vite config or the bundle script emits into, for `pkg/dist/**` patterns. */
function producedBy(dir: string, sub = 'dist'): boolean {
  if (sub === 'dist/bundle')
    return dir === 'electron' && existsSync(join(ROOT, 'electron/scripts/bundle.mjs'));
  const ts = join(ROOT, dir, 'tsconfig.json');
  if (existsSync(ts) && /"outDir":\s*"dist"/.test(readFileSync(ts, 'utf8'))) return true;
  const vite = join(ROOT, dir, 'vite.config.ts');
  return existsSync(vite) && /outDir: 'dist'/.test(readFileSync(vite, 'utf8'));
}

describe('the bundle the package carries', () => {
  it('main, preload and helper are self-contained: only electron and node: built-ins are imported', () => {
    execFileSync(process.execPath, [join(ROOT, 'electron/scripts/bundle.mjs')], { stdio: 'pipe' });
    const bare = (file: string) =>
      [
        ...readFileSync(join(ROOT, 'electron/dist/bundle', file), 'utf8').matchAll(
          /^import [^;]*?from ["']([^"']+)["']/gm,
        ),
      ]
        .map((m) => m[1] ?? '')
        .filter((spec) => spec !== 'electron' && !spec.startsWith('node:'));
    expect(bare('main.js')).toEqual([]);
    expect(bare('weft-helper.mjs')).toEqual([]);
    expect(readFileSync(join(ROOT, 'electron/dist/bundle/preload.cjs'), 'utf8')).not.toMatch(
      /require\("(?!electron")/,
    );
    // the bundled helper runs on its own (as systemd starts it, minus root)
    const help = execFileSync(
      process.execPath,
      [join(ROOT, 'electron/dist/bundle/weft-helper.mjs'), '--help'],
      {
        encoding: 'utf8',
      },
    );
    expect(help).toContain('--socket');
  }, 60_000);
});

describe('electron-builder.yml', () => {
  it('parses, with known keys only, and the targets: AppImage, deb, rpm, dmg, nsis', () => {
    for (const k of Object.keys(parse(text))) expect(KNOWN_TOP_LEVEL.has(k), k).toBe(true);
    expect(config.linux.target).toEqual(['AppImage', 'deb', 'rpm']);
    expect(config.mac.target).toEqual(['dmg']);
    expect(config.win.target).toEqual(['nsis']);
  });

  it('every file it names exists, or is a build output of a workspace', () => {
    for (const pattern of [...config.files, ...config.asarUnpack]) {
      const p = pattern.replace(/^!/, '');
      if (p.startsWith('**')) continue;
      const dist = /^([a-z-]+)\/(dist\/bundle|dist)\//.exec(p);
      if (dist?.[1]) {
        expect(producedBy(dist[1], dist[2]), pattern).toBe(true);
        continue;
      }
      const base = p.split('*')[0] ?? p;
      expect(existsSync(join(ROOT, base)), pattern).toBe(true);
    }
    for (const f of [
      config.linux.icon,
      config.mac.icon,
      config.win.icon,
      config.deb.afterInstall,
      config.deb.afterRemove,
    ]) {
      expect(existsSync(join(ROOT, f)), f).toBe(true);
    }
    for (const r of config.linux.extraResources) expect(existsSync(join(ROOT, r.from)), r.from).toBe(true);
    expect(config.extraMetadata.main).toBe('electron/dist/bundle/main.js');
    expect(existsSync(join(ROOT, 'electron/src/main.ts'))).toBe(true);
    expect(config.protocols[0]?.schemes).toEqual([DEEP_LINK_SCHEME]);
  });

  it('install scripts are executable, valid sh, and create the group that guards the socket', () => {
    for (const f of [config.deb.afterInstall, config.deb.afterRemove]) {
      expect(statSync(join(ROOT, f)).mode & 0o111, f).not.toBe(0);
      execFileSync('sh', ['-n', join(ROOT, f)]);
    }
    const install = readFileSync(join(ROOT, config.deb.afterInstall), 'utf8');
    expect(install).toContain('groupadd --system weft');
    expect(install).toContain('systemctl enable weft-helper.service');
    // an upgrade restarts the helper (SIGTERM keeps the kill switch for the new one to take over)
    expect(install).toContain('systemctl restart weft-helper.service');
    expect(install).toContain('/usr/lib/tmpfiles.d/weft.conf');
  });

  it("removal takes the helper's state down (SIGINT); an upgrade leaves it to the new helper", () => {
    const remove = readFileSync(join(ROOT, config.deb.afterRemove), 'utf8');
    expect(remove).toContain('systemctl kill --kill-whom=main --signal=SIGINT weft-helper.service');
    // deb passes "upgrade", rpm 1 (or 2): the script stops before touching anything.
    expect(remove).toMatch(/case "\$\{1:-remove\}" in\n {2}upgrade \| 1 \| 2\) exit 0 ;;\nesac/);
    expect(remove.indexOf('exit 0 ;;')).toBeLessThan(remove.indexOf('systemctl'));
  });

  it("the engine's socket directory is sticky and group-owned, made by tmpfiles.d", () => {
    const tmpfiles = readFileSync(join(ROOT, 'electron/packaging/linux/weft-tmpfiles.conf'), 'utf8');
    expect(tmpfiles).toContain('d /run/weft 1770 root weft -');
    expect(config.linux.extraResources.map((r: { from: string }) => r.from)).toContain(
      'electron/packaging/linux/weft-tmpfiles.conf',
    );
  });

  it('the helper runs as a hardened systemd service with a group-restricted socket', () => {
    const unit = readFileSync(join(ROOT, 'electron/packaging/linux/weft-helper.service'), 'utf8');
    const sections = [...unit.matchAll(/^\[(\w+)\]$/gm)].map((m) => m[1]);
    expect(sections).toEqual(['Unit', 'Service', 'Install']);
    const exec = /^ExecStart=(.*)$/m.exec(unit)?.[1] ?? '';
    expect(exec).toContain('app.asar.unpacked/electron/dist/bundle/weft-helper.mjs');
    expect(config.asarUnpack).toContain('electron/dist/bundle/weft-helper.mjs');
    expect(exec).toContain('--socket /run/weft-helper/helper.sock');
    expect(exec).toContain('--group weft');
    expect(exec).toContain('--state-dir /var/lib/weft-helper');
    expect(existsSync(join(ROOT, 'native-helpers/src/main.ts'))).toBe(true);
    for (const line of [
      'RuntimeDirectory=weft-helper',
      'RuntimeDirectoryMode=0755',
      'StateDirectory=weft-helper',
      'StateDirectoryMode=0700',
      'KillSignal=SIGTERM',
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'ProtectHome=yes',
    ]) {
      expect(unit).toContain(line);
    }
    expect(/^CapabilityBoundingSet=(.*)$/m.exec(unit)?.[1]?.split(' ')).toContain('CAP_NET_ADMIN');
    // the app probes the same socket the service listens on
    expect(readFileSync(join(ROOT, 'electron/src/main.ts'), 'utf8')).toContain(
      "'/run/weft-helper/helper.sock'",
    );
    for (const line of unit.split('\n')) {
      if (line === '' || line.startsWith('#') || line.startsWith('[')) continue;
      expect(line, line).toMatch(/^[A-Za-z]+=/);
    }
  });
});
