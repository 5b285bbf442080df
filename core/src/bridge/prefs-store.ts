import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { type Preferences, Preferences as PreferencesSchema } from '@weft/protocol';
import { DEFAULT_PREFERENCES, type PrefsStore } from './controller.js';

/** Preferences in a JSON file (electron's userData); a missing or damaged file means defaults. */
export function filePrefsStore(path: string, onError: (message: string) => void = () => {}): PrefsStore {
  return {
    load(): Preferences {
      let text: string;
      try {
        text = readFileSync(path, 'utf8');
      } catch {
        return { ...DEFAULT_PREFERENCES };
      }
      try {
        const parsed = PreferencesSchema.partial().safeParse(JSON.parse(text));
        if (parsed.success) return { ...DEFAULT_PREFERENCES, ...parsed.data };
        onError(`ignoring ${path}: ${parsed.error.issues[0]?.message}`);
      } catch {
        onError(`ignoring ${path}: not JSON`);
      }
      return { ...DEFAULT_PREFERENCES };
    },
    save(prefs: Preferences): void {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      const tmp = `${path}.tmp-${process.pid}`;
      writeFileSync(tmp, `${JSON.stringify(PreferencesSchema.parse(prefs), null, 2)}\n`, { mode: 0o600 });
      renameSync(tmp, path);
    },
  };
}
