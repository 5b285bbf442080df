import jsonc from 'jsonc-parser';
import { LineIndex, PolicyError, type PolicyIssue, type SourcePos } from './errors.js';

// HuJSON is JSON plus comments and trailing commas. jsonc-parser (Microsoft's, used by VS Code)
// reads exactly that and gives offsets, which we turn into line and column. Every recovery it
// would make is refused instead: a policy with a syntax error never half-loads.

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** A parsed value with where it came from, so later checks can point at it. */
export type JsonNode =
  | { kind: 'null'; pos: SourcePos }
  | { kind: 'boolean'; value: boolean; pos: SourcePos }
  | { kind: 'number'; value: number; pos: SourcePos }
  | { kind: 'string'; value: string; pos: SourcePos }
  | { kind: 'array'; items: JsonNode[]; pos: SourcePos }
  | { kind: 'object'; entries: JsonEntry[]; pos: SourcePos };

export interface JsonEntry {
  key: string;
  keyPos: SourcePos;
  value: JsonNode;
}

const SYNTAX_MESSAGES: Record<string, string> = {
  InvalidSymbol: 'unexpected character',
  InvalidNumberFormat: 'invalid number',
  PropertyNameExpected: 'expected a quoted property name',
  ValueExpected: 'expected a value',
  ColonExpected: 'expected ":"',
  CommaExpected: 'expected ","',
  CloseBraceExpected: 'expected "}"',
  CloseBracketExpected: 'expected "]"',
  EndOfFileExpected: 'unexpected text after the end of the document',
  InvalidCommentToken: 'invalid comment',
  UnexpectedEndOfComment: 'unterminated comment',
  UnexpectedEndOfString: 'unterminated string',
  UnexpectedEndOfNumber: 'unterminated number',
  InvalidUnicode: 'invalid unicode escape',
  InvalidEscapeCharacter: 'invalid escape character',
  InvalidCharacter: 'invalid character in string',
};

export function parseHuJson(text: string): JsonNode {
  const lines = new LineIndex(text);
  const errors: jsonc.ParseError[] = [];
  const root = jsonc.parseTree(text, errors, { allowTrailingComma: true, disallowComments: false });
  if (errors.length > 0) {
    throw new PolicyError(
      errors.map((e) => {
        const code = jsonc.printParseErrorCode(e.error);
        return { message: `syntax error: ${SYNTAX_MESSAGES[code] ?? code}`, pos: lines.pos(e.offset) };
      }),
    );
  }
  if (root === undefined) throw new PolicyError([{ message: 'the policy is empty', pos: lines.pos(0) }]);
  const issues: PolicyIssue[] = [];
  const node = convert(root, lines, issues);
  if (issues.length > 0) throw new PolicyError(issues);
  return node;
}

function convert(n: jsonc.Node, lines: LineIndex, issues: PolicyIssue[]): JsonNode {
  const pos = lines.pos(n.offset);
  switch (n.type) {
    case 'null':
      return { kind: 'null', pos };
    case 'boolean':
      return { kind: 'boolean', value: n.value as boolean, pos };
    case 'number':
      return { kind: 'number', value: n.value as number, pos };
    case 'string':
      return { kind: 'string', value: n.value as string, pos };
    case 'array':
      return { kind: 'array', items: (n.children ?? []).map((c) => convert(c, lines, issues)), pos };
    case 'object': {
      const entries: JsonEntry[] = [];
      const seen = new Set<string>();
      for (const prop of n.children ?? []) {
        const [keyNode, valueNode] = prop.children ?? [];
        if (!keyNode || !valueNode) continue;
        const key = keyNode.value as string;
        const keyPos = lines.pos(keyNode.offset);
        // JSON leaves duplicates undefined; silently keeping one of them could hide a rule.
        if (seen.has(key)) issues.push({ message: `duplicate key "${key}"`, pos: keyPos });
        seen.add(key);
        entries.push({ key, keyPos, value: convert(valueNode, lines, issues) });
      }
      return { kind: 'object', entries, pos };
    }
    default:
      throw new Error(`unexpected JSON node type ${n.type}`);
  }
}

/** Drops positions, for values kept verbatim (capability values). */
export function toPlain(n: JsonNode): JsonValue {
  switch (n.kind) {
    case 'array':
      return n.items.map(toPlain);
    case 'object':
      return Object.fromEntries(n.entries.map((e) => [e.key, toPlain(e.value)]));
    case 'null':
      return null;
    default:
      return n.value;
  }
}
