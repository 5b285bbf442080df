import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ConnectionPhase } from '@weft/protocol';
import { describe, expect, it } from 'vitest';
import { trayIconFile } from './tray-menu.js';

const ASSETS = fileURLToPath(new URL('../../assets', import.meta.url));
const PHASES: ConnectionPhase[] = [
  'disconnected',
  'connecting',
  'connected',
  'exit-node',
  'needs-login',
  'error',
];

function pngSize(path: string): [number, number] {
  const b = readFileSync(path);
  expect(b.subarray(0, 8).toString('hex')).toBe('89504e470d0a1a0a');
  expect(b.subarray(12, 16).toString('ascii')).toBe('IHDR');
  return [b.readUInt32BE(16), b.readUInt32BE(20)];
}

describe('tray and app icons', () => {
  it('every state has light, dark and template icons at 1x and 2x, as the tray asks for them', () => {
    for (const phase of PHASES) {
      for (const [platform, dark] of [
        ['linux', false],
        ['linux', true],
        ['darwin', false],
      ] as const) {
        const { file } = trayIconFile(phase, platform, dark);
        expect(pngSize(join(ASSETS, file))).toEqual([16, 16]);
        expect(pngSize(join(ASSETS, file.replace('.png', '@2x.png')))).toEqual([32, 32]);
      }
    }
    expect(pngSize(join(ASSETS, 'icon.png'))).toEqual([512, 512]);
    expect(pngSize(join(ASSETS, 'icon-256.png'))).toEqual([256, 256]);
  });

  it('the states look different from each other', () => {
    const bytes = PHASES.map((p) => readFileSync(join(ASSETS, `tray/${p}-light@2x.png`)).toString('base64'));
    expect(new Set(bytes).size).toBe(PHASES.length);
  });

  it('the committed icons are what make-icons.mjs draws (regenerate with npm run icons)', () => {
    const out = mkdtempSync(join(tmpdir(), 'weft-icons-'));
    try {
      execFileSync(process.execPath, [join(ASSETS, 'make-icons.mjs'), '--out', out]);
      const files = readdirSync(join(out, 'tray'));
      expect(files).toHaveLength(PHASES.length * 3 * 3);
      for (const f of files)
        expect(readFileSync(join(out, 'tray', f)).equals(readFileSync(join(ASSETS, 'tray', f))), f).toBe(
          true,
        );
      expect(readFileSync(join(out, 'icon.png')).equals(readFileSync(join(ASSETS, 'icon.png')))).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
