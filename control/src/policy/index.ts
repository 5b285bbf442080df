// The policy compiler: Tailscale-format policy files compiled into per-node packet filters,
// peer sets and routes. Pure: no I/O except the compile command reading its two files.

export { type CheckResult, checkPolicy, unknownUsers } from './check.js';
export { type CommandResult, type CompileCommandArgs, runCompileCommand } from './compile-command.js';
export {
  CompiledPolicy,
  type CompileOptions,
  compilePolicy,
  type NodePolicy,
  TAILSCALE_WILDCARD_SOURCES,
} from './compiler.js';
export { formatIssue, PolicyError, type PolicyIssue, type SourcePos } from './errors.js';
export { compareFilters, filterMeaning } from './filter-meaning.js';
export { IPSet } from './ipset.js';
export { parsePolicy } from './parse.js';
export { runPolicyTests } from './policy-tests.js';
export { parseTailnet, Tailnet, type TailnetInput, TailnetNode, TailnetUser } from './tailnet.js';
export type * from './types.js';
