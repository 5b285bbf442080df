import { type FSWatcher, watch } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { formatIssues, setPolicyText } from '../cli/policy.js';
import type { Store } from '../db/store.js';
import { errorText, type Logger } from '../log.js';
import type { NetmapHub } from '../netmap/hub.js';
import type { PolicyVisibility } from '../netmap/policy-visibility.js';
import { PolicyError, parsePolicy } from '../policy/index.js';
import { CoalescingRefresh } from '../refresh.js';

// The policy in force follows the database: `policy set`, another replica or this server's file
// watcher stores a new version; the change feed (or the writer itself) calls refresh(), which
// compiles the newest version and sends every connected node what moved for it. A stored version
// that does not parse (it was checked when it was set, so only a hand-edited database gets here)
// is logged and the previous policy stays.

export class PolicySync {
  /** The version this server has acted on: in force, or refused; -1 before the first load. */
  private version = -1;
  private readonly refresher = new CoalescingRefresh((askedAt) => this.load(askedAt));

  constructor(
    private readonly store: Store,
    private readonly visibility: PolicyVisibility,
    private readonly hub: NetmapHub,
    private readonly log: Logger,
  ) {}

  /** Resolves once the policy in force is the newest one stored before the call. */
  refresh(): Promise<void> {
    return this.refresher.run();
  }

  private async load(askedAt: number): Promise<void> {
    if ((await this.store.policyVersion()) === this.version) return;
    const record = await this.store.currentPolicy();
    if (record === undefined) {
      this.version = 0;
      return;
    }
    this.version = record.version;
    let policy: ReturnType<typeof parsePolicy>;
    try {
      policy = parsePolicy(record.text);
    } catch (err) {
      const why =
        err instanceof PolicyError
          ? `\n${formatIssues(`policy version ${record.version}`, err.issues)}`
          : errorText(err);
      this.log.error(
        `stored policy version ${record.version} does not parse; the previous policy stays: ${why}`,
      );
      return;
    }
    const started = performance.now();
    this.hub.fanOut.during(askedAt, () => this.hub.policyChanged(this.visibility.setPolicy(policy)));
    this.log.info(
      `policy version ${record.version} in force (set by ${record.createdBy} at ${record.createdAt}; applied in ${Math.round(performance.now() - started)} ms)`,
    );
  }
}

export const POLICY_FILE_DEBOUNCE_MS = 150;

/**
 * `serve --policy-file FILE`: the file is the policy. Every save is checked like `policy set` and,
 * when it passes, stored as the next version; a file that fails is logged with line and column and
 * the policy in force stays. The folder is watched rather than the file, since editors save by
 * writing a new file and renaming it over the old one.
 */
export class PolicyFileWatcher {
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> = Promise.resolve();
  private lastText: string | null = null;
  readonly file: string;

  constructor(
    file: string,
    private readonly store: Store,
    /** Called after a new version was stored, so this server applies it without waiting for a poll. */
    private readonly applied: () => Promise<void>,
    private readonly log: Logger,
    private readonly debounceMs = POLICY_FILE_DEBOUNCE_MS,
  ) {
    this.file = resolve(file);
  }

  /** Applies the file as it is now; fails when it cannot be read or is refused. Then watches it. */
  async start(): Promise<void> {
    const result = await this.apply();
    if (result !== 'ok') throw new Error(result);
    const name = basename(this.file);
    this.watcher = watch(dirname(this.file), (_event, changed) => {
      if (changed !== null && changed !== name) return;
      if (this.timer) clearTimeout(this.timer);
      this.timer = setTimeout(() => {
        this.timer = null;
        this.running = this.running.then(async () => {
          const outcome = await this.apply();
          if (outcome !== 'ok') this.log.error(outcome);
        });
      }, this.debounceMs);
    });
    this.watcher.on('error', (err) => this.log.error(`watching ${this.file}: ${errorText(err)}`));
  }

  close(): Promise<void> {
    this.watcher?.close();
    this.watcher = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    return this.running;
  }

  /** 'ok', or why the file was not applied. */
  private async apply(): Promise<string> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      // Between an editor's delete and rename the file may be missing for a moment.
      return `cannot read policy file ${this.file}: ${errorText(err)}; the policy in force stays`;
    }
    if (text === this.lastText) return 'ok';
    try {
      const result = await setPolicyText(this.store, text, `file:${this.file}`);
      for (const w of result.warnings) this.log.warn(formatIssues(this.file, [w], 'warning: ').trimEnd());
      if (!result.ok) {
        return `policy file refused; the policy in force stays:\n${formatIssues(this.file, result.issues).trimEnd()}`;
      }
      this.lastText = text;
      if (!result.unchanged) {
        this.log.info(`policy file ${this.file} stored as version ${result.record.version}`);
        await this.applied();
      }
      return 'ok';
    } catch (err) {
      return `applying policy file ${this.file}: ${errorText(err)}; the policy in force stays`;
    }
  }
}
