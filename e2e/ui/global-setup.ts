import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Builds the renderer once before the browser tests, as `npm run build -w @weft/renderer` would
 * (in its own process: vitest sets NODE_ENV=test, which would give React's development build).
 * WEFT_UI_SKIP_BUILD=1 uses the last build.
 */
export default function setup(): void {
  if (process.env.WEFT_UI_SKIP_BUILD === '1') return;
  execFileSync(
    process.execPath,
    [
      join(dirname(createRequire(import.meta.url).resolve('vite/package.json')), 'bin', 'vite.js'),
      'build',
      '--logLevel',
      'warn',
    ],
    {
      cwd: fileURLToPath(new URL('../../renderer', import.meta.url)),
      env: { ...process.env, NODE_ENV: 'production' },
      stdio: 'inherit',
    },
  );
}
