import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { type Command, CommanderError } from 'commander';
import { retryConflicts } from '../db/errors.js';
import type { Store } from '../db/store.js';
import { errorText } from '../log.js';
import { policyTailnet } from '../netmap/policy-visibility.js';
import {
  type CheckResult,
  checkPolicy,
  formatIssue,
  type PolicyIssue,
  parsePolicy,
  runCompileCommand,
} from '../policy/index.js';
import type { PolicyRecord } from '../tailnet/records.js';
import { CliError } from './admin.js';

// The policy commands as functions over a Store, shared by `weft-control policy …` and the server's
// policy-file watcher. A policy is checked against the tailnet in the database (its users, and its
// nodes for tests naming addresses) and must pass its own tests before it is stored; a refused
// policy changes nothing.

/** What the tailnet is under until a policy is set: every node may reach every node. */
export const DEFAULT_POLICY_TEXT = `// No policy has been set: every node may reach every other node on every port.
// This file is that default written as a policy; edit it and run \`weft-control policy set FILE\`.
{
  "acls": [{ "action": "accept", "src": ["*"], "dst": ["*:*"] }],
}
`;

/** Checks a policy text against the tailnet as the database has it now. */
export async function checkPolicyText(store: Store, text: string): Promise<CheckResult> {
  // Only the policy's tests look at nodes: without any, reading every node (10,000 of them) would
  // be most of the check. A text that does not parse is reported by checkPolicy.
  let tests = true;
  try {
    tests = parsePolicy(text).tests.length > 0;
  } catch {}
  const [users, nodes] = await Promise.all([store.listUsers(), tests ? store.listNodes() : []]);
  return checkPolicy(text, policyTailnet(users, nodes));
}

export type SetPolicyResult =
  | { ok: true; record: PolicyRecord; unchanged: boolean; warnings: PolicyIssue[] }
  | { ok: false; issues: PolicyIssue[]; warnings: PolicyIssue[] };

/** Checks `text` and, when it passes, stores it as the next version (unless it is the current text). */
export async function setPolicyText(
  store: Store,
  text: string,
  createdBy: string,
  now = new Date(),
): Promise<SetPolicyResult> {
  const checked = await checkPolicyText(store, text);
  if (!checked.ok) return checked;
  const current = await store.currentPolicy();
  if (current?.text === text)
    return { ok: true, record: current, unchanged: true, warnings: checked.warnings };
  const record = await retryConflicts(() => store.insertPolicy(text, createdBy, now));
  return { ok: true, record, unchanged: false, warnings: checked.warnings };
}

/** One line per issue, prefixed with the file it came from, as compilers print them. */
export function formatIssues(file: string, issues: readonly PolicyIssue[], prefix = ''): string {
  return issues.map((i) => `${file}: ${prefix}${formatIssue(i)}\n`).join('');
}

export function formatPolicyHistory(versions: Omit<PolicyRecord, 'text'>[], json: boolean): string {
  if (json) return `${JSON.stringify(versions, null, 2)}\n`;
  if (versions.length === 0) return 'no policy has been set (every node may reach every node)\n';
  const rows = versions.map((v) => `${String(v.version).padEnd(8)}${v.createdAt.padEnd(26)}${v.createdBy}`);
  return `${'VERSION'.padEnd(8)}${'SET AT'.padEnd(26)}SET BY\n${rows.join('\n')}\n`;
}

/** The output a policy command needs: its stdout and stderr. */
export interface PolicyCommandIo {
  out(text: string): void;
  err(text: string): void;
}

/** `weft-control policy check|set|get|history|compile`. */
export function registerPolicyCommands(
  program: Command,
  io: PolicyCommandIo,
  withStore: (cmd: Command, fn: (store: Store) => Promise<void>) => Promise<void>,
): void {
  const policy = program
    .command('policy')
    .description('the access policy: who may reach what (Tailscale policy format, HuJSON)');
  const read = (file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new CliError(`cannot read ${file}: ${errorText(err)}`);
    }
  };
  const warn = (file: string, warnings: readonly PolicyIssue[]) =>
    io.err(formatIssues(file, warnings, 'warning: '));

  policy
    .command('check <file>')
    .description('validate a policy against the tailnet and run its tests; changes nothing')
    .action((file: string, _opts, cmd: Command) =>
      withStore(cmd, async (store) => {
        const checked = await checkPolicyText(store, read(file));
        warn(file, checked.warnings);
        if (!checked.ok) {
          io.err(formatIssues(file, checked.issues));
          throw new CliError(`${file}: policy refused (${plural(checked.issues.length, 'problem')})`);
        }
        io.out(`${file}: policy is valid; ${plural(checked.policy.tests.length, 'test')} passed\n`);
      }),
    );

  policy
    .command('set <file>')
    .description('check a policy, then put it in force on every server; refused if invalid or a test fails')
    .action((file: string, _opts, cmd: Command) =>
      withStore(cmd, async (store) => {
        const result = await setPolicyText(store, read(file), `cli:${whoAmI()}`);
        warn(file, result.warnings);
        if (!result.ok) {
          io.err(formatIssues(file, result.issues));
          const version = await store.policyVersion();
          const stays = version === 0 ? 'the default (allow-all)' : `version ${version}`;
          throw new CliError(`${file}: policy refused; the policy in force stays (${stays})`);
        }
        io.err(
          result.unchanged
            ? `policy unchanged: it is already version ${result.record.version}\n`
            : `policy version ${result.record.version} set\n`,
        );
      }),
    );

  policy
    .command('get')
    .description('print the policy in force, exactly as it was set')
    .action((_opts, cmd: Command) =>
      withStore(cmd, async (store) => {
        const current = await store.currentPolicy();
        if (current === undefined) {
          io.err('no policy has been set; this is the default it stands for:\n');
          io.out(DEFAULT_POLICY_TEXT);
          return;
        }
        io.out(current.text);
      }),
    );

  policy
    .command('history')
    .description('list every policy version: when and by whom it was set')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }, cmd: Command) =>
      withStore(cmd, async (store) =>
        io.out(formatPolicyHistory(await store.listPolicies(), opts.json ?? false)),
      ),
    );

  policy
    .command('compile')
    .description('print what each node of a described tailnet would be sent, as JSON (no database)')
    .requiredOption('--policy <file>', 'the policy file')
    .requiredOption('--tailnet <file>', 'JSON {"users": […], "nodes": {NAME: {…}}}')
    .action((opts: { policy: string; tailnet: string }) => {
      const result = runCompileCommand({ policyFile: opts.policy, tailnetFile: opts.tailnet });
      io.out(result.stdout);
      io.err(result.stderr);
      // Output written already: end with the command's code and nothing more.
      if (result.exitCode !== 0) throw new CommanderError(result.exitCode, 'weft.policy.compile', '');
    });
}

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;

function whoAmI(): string {
  try {
    return userInfo().username;
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`;
  }
}
