import { readFileSync } from 'node:fs';
import { checkPolicy } from './check.js';
import { compilePolicy, type NodePolicy } from './compiler.js';
import { formatIssue } from './errors.js';
import { parseTailnet } from './tailnet.js';

// `weft-control policy compile --policy FILE --tailnet FILE`: what each node of a described
// tailnet would be sent. The output shape is the conformance cases' `expect` shape.

export interface CompileCommandArgs {
  policyFile: string;
  tailnetFile: string;
}

export interface CommandResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export function runCompileCommand(args: CompileCommandArgs): CommandResult {
  let policyText: string;
  let tailnetValue: unknown;
  try {
    policyText = readFileSync(args.policyFile, 'utf8');
    tailnetValue = JSON.parse(readFileSync(args.tailnetFile, 'utf8'));
  } catch (e) {
    return { exitCode: 2, stdout: '', stderr: `${(e as Error).message}\n` };
  }
  let tailnet: ReturnType<typeof parseTailnet>;
  try {
    tailnet = parseTailnet(tailnetValue);
  } catch (e) {
    return { exitCode: 2, stdout: '', stderr: `${args.tailnetFile}: ${(e as Error).message}\n` };
  }
  const checked = checkPolicy(policyText, tailnet);
  const warnings = checked.warnings.map((w) => `${args.policyFile}: warning: ${formatIssue(w)}\n`).join('');
  if (!checked.ok) {
    const errors = checked.issues.map((i) => `${args.policyFile}: ${formatIssue(i)}\n`).join('');
    return { exitCode: 1, stdout: '', stderr: `${warnings}policy refused:\n${errors}` };
  }
  const nodes: Record<string, NodePolicy> = compilePolicy(checked.policy, tailnet).all();
  return { exitCode: 0, stdout: `${JSON.stringify({ nodes }, null, 2)}\n`, stderr: warnings };
}
