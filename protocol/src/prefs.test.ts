import { describe, expect, it } from 'vitest';
import { PREFS_DEFAULTS, Prefs, PrefsPatch, patchPrefs, StoredPrefs, withDefaults } from './prefs.js';

// The one preferences model: a file from before the route choices still loads, a patch changes
// only what it names, and a patch cannot reach the prefs that only up/down/logout change.

const base = {
  controlUrl: 'https://weft.example.com',
  hostname: 'laptop',
  wantRunning: true,
  listenPort: 41641,
};

describe('prefs', () => {
  it('fills the choices an older file lacks with their defaults, and keeps the ones it has', () => {
    const old = StoredPrefs.parse(base);
    expect(withDefaults(old)).toEqual({ ...base, ...PREFS_DEFAULTS });
    const full = withDefaults({ ...base, exitNodeId: 'n2', acceptRoutes: false });
    expect(full).toMatchObject({ exitNodeId: 'n2', acceptRoutes: false, exitNodeAllowLan: false });
    expect(Prefs.safeParse(full).success).toBe(true);
  });

  it('applies a patch to the choices it names and keeps the rest', () => {
    const prefs = withDefaults({ ...base, exitNodeId: 'n2', exitNodeAllowLan: true });
    const next = patchPrefs(prefs, PrefsPatch.parse({ advertiseRoutes: ['198.51.100.0/24'] }));
    expect(next).toEqual({ ...prefs, advertiseRoutes: ['198.51.100.0/24'] });
    expect(patchPrefs(prefs, { exitNodeId: null })).toEqual({ ...prefs, exitNodeId: null });
  });

  it('refuses a patch of what only up, down and logout change, and anything unknown', () => {
    expect(PrefsPatch.safeParse({ wantRunning: false }).success).toBe(false);
    expect(PrefsPatch.safeParse({ listenPort: 1 }).success).toBe(false);
    expect(PrefsPatch.safeParse({ exitNode: 'n2' }).success).toBe(false);
    expect(PrefsPatch.safeParse({ advertiseRoutes: ['not a cidr'] }).success).toBe(false);
  });
});
