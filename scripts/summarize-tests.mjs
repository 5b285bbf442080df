// Sums vitest/Playwright JSON reports and the shell checks into the closing line CI reads.
// A report that is missing or unreadable counts as one failure: a suite that crashed proved nothing.
import { readFileSync } from 'node:fs';

const [checksPassed, checksFailed, ...reports] = process.argv.slice(2);
let passed = Number(checksPassed);
let failed = Number(checksFailed);
for (const file of reports) {
  try {
    const r = JSON.parse(readFileSync(file, 'utf8'));
    if (typeof r.numPassedTests === 'number') {
      // vitest (Jest-compatible JSON); files that failed to load count as failures too
      passed += r.numPassedTests;
      failed += r.numFailedTests + (r.numFailedTestSuites > 0 && r.numFailedTests === 0 ? 1 : 0);
    } else if (r.stats) {
      // Playwright
      passed += r.stats.expected + (r.stats.flaky ?? 0);
      failed += r.stats.unexpected;
    } else throw new Error('unknown report format');
  } catch (e) {
    console.error(`summarize: ${file}: ${e.message}`);
    failed += 1;
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
