// Sums vitest/Playwright JSON reports and the shell checks into the closing line CI reads.
// A report that is missing or unreadable counts as one failure: a suite that crashed proved nothing.
import { readFileSync } from 'node:fs';

const [checksPassed, checksFailed, ...reports] = process.argv.slice(2);
let passed = Number(checksPassed);
let failed = Number(checksFailed);
/** What failed, named just above the closing line: CI often keeps only the tail of the output. */
const failures = [];
for (const file of reports) {
  try {
    const r = JSON.parse(readFileSync(file, 'utf8'));
    if (typeof r.numPassedTests === 'number') {
      // vitest (Jest-compatible JSON); files that failed to load count as failures too
      passed += r.numPassedTests;
      failed += r.numFailedTests + (r.numFailedTestSuites > 0 && r.numFailedTests === 0 ? 1 : 0);
      for (const suite of r.testResults ?? []) {
        const tests = suite.assertionResults ?? [];
        for (const t of tests.filter((t) => t.status === 'failed')) {
          failures.push(`${suite.name} > ${t.fullName}: ${firstLine(t.failureMessages?.[0])}`);
        }
        if (suite.status === 'failed' && !tests.some((t) => t.status === 'failed')) {
          failures.push(`${suite.name} (the file itself): ${firstLine(suite.message)}`);
        }
      }
    } else if (r.stats) {
      // Playwright
      passed += r.stats.expected + (r.stats.flaky ?? 0);
      failed += r.stats.unexpected;
      if (r.stats.unexpected > 0) failures.push(`${file}: ${r.stats.unexpected} unexpected`);
    } else throw new Error('unknown report format');
  } catch (e) {
    console.error(`summarize: ${file}: ${e.message}`);
    failed += 1;
    failures.push(`${file}: ${e.message}`);
  }
}
if (Number(checksFailed) > 0)
  failures.unshift(`${checksFailed} check(s) failed (lint, build or test types; see "!!" above)`);
for (const f of failures) console.log(`FAILED ${f}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);

function firstLine(text) {
  return (
    String(text ?? '')
      .split('\n')
      .find((l) => l.trim() !== '') ?? '(no message)'
  );
}
