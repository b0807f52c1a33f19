import { describe, expect, it } from 'vitest';
import { ChaosSystem } from '../../bench/chaos/system.ts';
import { Frozen } from '../../src/chaos/processes.ts';
import { chaosMarkdown } from '../../src/chaos/report.ts';
import { runChaos } from '../../src/chaos/run.ts';

/**
 * A short seeded chaos run, the long one's tool on a handful of cheap faults: the Procfile
 * layout as separate processes, an `ha` database under a writer, and faults that pgfleet
 * already rides out. Any acknowledged row lost, split brain or database not whole in 60 s
 * fails it.
 */
describe('chaos (npm run chaos, short)', () => {
  it('rides out a primary crash and killed web and clock processes, and tells so in its table', async () => {
    const lines: string[] = [];
    const system = new ChaosSystem({ databases: 1, workers: 2, log: (line) => lines.push(line) });
    const frozen = new Frozen();
    try {
      await system.start();
      const result = await runChaos(system.deployment!, system.databases, {
        faults: 4,
        seed: 11,
        kinds: ['primary-crash', 'web-killed', 'clock-killed'],
        wholeBoundS: 60,
        log: (line) => lines.push(line),
        frozen,
      });
      expect(result.faults, lines.join('\n')).toHaveLength(4);
      expect(result.failures, lines.join('\n')).toEqual([]);
      expect(result.faults.every((f) => f.rowsLost === 0 && f.splitBrains === 0 && !f.stuck)).toBe(true);
      expect(result.faults.some((f) => f.kind === 'primary-crash' && Number.isFinite(f.firstCommitMs))).toBe(true);
      expect(result.polls).toBeGreaterThan(50);
      expect(system.databases[0]!.writer.acknowledged.length).toBeGreaterThan(100);
      const md = chaosMarkdown(result);
      for (const row of result.table) expect(md).toContain(`| ${row.kind} | ${row.count} |`);
      expect(result.table.reduce((n, r) => n + r.count, 0)).toBe(4);
    } finally {
      frozen.thaw();
      await system.stop();
    }
  }, 300_000);
});
