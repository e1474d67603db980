// The faults suite's short form (reliability/suites/faults.ts): 18 faults of every kind (upstream cuts,
// wrong bytes, resets, drips, a 429 storm, a 5xx burst, kill -9 mid-fill and mid-commit, a full tmpfs, a
// locked SQLite file) with zero violations allowed. REGMIRROR_FAULTS_SEED=N repeats a run (each prints its seed).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeViolation } from '../reliability/lib/result.js';
import { FAULT_KINDS } from '../reliability/suites/faults-ledger.js';
import { runFaults } from '../reliability/suites/faults.js';

describe('faults suite, short', { timeout: 600_000 }, () => {
  it('after every fault: nothing wrong given as whole, verify finds nothing, the next pull succeeds', async () => {
    const seed = process.env.REGMIRROR_FAULTS_SEED === undefined ? undefined : Number(process.env.REGMIRROR_FAULTS_SEED);
    const result = await runFaults('short', { ...(seed === undefined ? {} : { seed }), say: (line) => console.log(line) });
    console.log(JSON.stringify(result.figures));
    const figures = (key: string): number => Number(result.figures[key] ?? 0);
    const report = result.violations.map((violation) => `- ${describeViolation(violation)}`).join('\n');
    assert.equal(result.violations.length, 0, `seed ${String(result.figures.seed)}: ${result.violations.length} violations (repeat with REGMIRROR_FAULTS_SEED=${String(result.figures.seed)}):\n${report}`);
    // Every kind was injected and reached what it aims at, or zero violations would prove little.
    for (const kind of FAULT_KINDS) assert.ok(figures(`${kind}:faults`) > 0, `${kind} faults injected`);
    assert.equal(result.tried, figures('faults'));
    assert.equal(figures('recoveries'), result.tried, 'each fault was followed by a pull that succeeded');
    assert.equal(figures('completeButWrong'), 0);
    assert.ok(figures('verifyRuns') >= FAULT_KINDS.length, 'verify ran after each kind');
    assert.equal(figures('verifyFindings'), 0);
    assert.ok(figures('crashVerifyRuns') >= figures('kill-fill:faults') + figures('kill-commit:faults'), 'verify ran right after each kill');
    assert.ok(figures('responses:cut') > 0, 'some answers were cut, as a fault should cut them');
    assert.ok(figures('429-storm:status:429') + figures('429-storm:status:503') > 0, 'the storm reached the clients as 429 or 503');
    // A write the lock outlasted: refused (503), the fill cut, or (the client had its verified bytes) the record left unwritten.
    const refusedWrites = figures('sqlite-lock:status:503') + figures('sqlite-lock:cut') + figures('sqlite-lock:fileLeftWithoutRecord');
    assert.ok(refusedWrites > 0, 'a write during the lock was refused');
  });
});
