// Every refusal names where in the policy text it was found, so an admin can fix the file.

export interface SourcePos {
  /** 1-based. */
  line: number;
  /** 1-based, in UTF-16 code units like most editors. */
  column: number;
}

export interface PolicyIssue {
  message: string;
  /** Absent only when the problem has no place in the text (for example an empty file). */
  pos?: SourcePos;
}

export function formatIssue(issue: PolicyIssue): string {
  return issue.pos ? `line ${issue.pos.line}, column ${issue.pos.column}: ${issue.message}` : issue.message;
}

export class PolicyError extends Error {
  constructor(readonly issues: PolicyIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'PolicyError';
  }
}

/** Maps offsets in a text to line and column. */
export class LineIndex {
  private readonly starts: number[] = [0];

  constructor(text: string) {
    for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) this.starts.push(i + 1);
  }

  pos(offset: number): SourcePos {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.starts[mid] as number) <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, column: offset - (this.starts[lo] as number) + 1 };
  }
}
