import { describe, expect, it } from 'vitest';
import { findAppRoot } from './app-root.js';
import { deepLinkFromArgv, parseDeepLink } from './deep-link.js';

describe('weft:// deep links', () => {
  it('navigates to known screens only', () => {
    expect(parseDeepLink('weft://settings')).toEqual({ type: 'open', view: 'settings' });
    expect(parseDeepLink('weft://exit-nodes/')).toEqual({ type: 'open', view: 'exit-nodes' });
    expect(parseDeepLink('weft://')).toEqual({ type: 'open', view: 'main' });
    expect(parseDeepLink('weft:settings')).toEqual({ type: 'open', view: 'settings' });
    expect(parseDeepLink('weft://login-complete')).toEqual({ type: 'login-complete' });
  });

  it('ignores anything else', () => {
    for (const bad of [
      'weft://connect',
      'weft://logout',
      'https://settings',
      'weft://settings/../../x',
      'nonsense',
      `weft://${'a'.repeat(3000)}`,
    ]) {
      expect(parseDeepLink(bad), bad).toBeNull();
    }
  });

  it('finds the link among a second instance argv', () => {
    expect(deepLinkFromArgv(['/opt/Weft/weft', '--no-sandbox', 'weft://settings'])).toBe('weft://settings');
    expect(deepLinkFromArgv(['/opt/Weft/weft'])).toBeNull();
  });
});

describe('app root', () => {
  it('is found from the development build and from the packaged bundle', () => {
    const has = (p: string) => p === '/opt/Weft/app/assets/tray';
    expect(findAppRoot('/opt/Weft/app/electron/dist', has)).toBe('/opt/Weft/app');
    expect(findAppRoot('/opt/Weft/app/electron/dist/bundle', has)).toBe('/opt/Weft/app');
    expect(() => findAppRoot('/elsewhere/x', has)).toThrow(/cannot find/);
  });
});
