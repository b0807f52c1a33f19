import { describe, expect, it } from 'vitest';
import {
  failures,
  isSplitBrain,
  kindTable,
  longestGap,
  missingRows,
  summarize,
  writableServers,
  type FaultResult,
} from '../../src/chaos/checks.ts';
import { chaosSettings } from '../../src/chaos/options.ts';
import { POSTGRES_FAULTS } from '../../src/chaos/faults.ts';
import { seeded, shuffled } from '../../src/chaos/run.ts';

const fault = (over: Partial<FaultResult>): FaultResult => ({
  n: 1,
  kind: 'primary-crash',
  resourceId: 'r',
  at: 0,
  firstCommitMs: 900,
  wholeMs: 5000,
  writeGapMs: 1000,
  rowsLost: 0,
  splitBrains: 0,
  stuck: false,
  incidentsOpened: 1,
  incidentsUnresolved: 0,
  deadJobs: 0,
  crashes: 0,
  notes: [],
  ...over,
});

describe('the chaos checks', () => {
  it('finds an acknowledged row that is not read back', () => {
    expect(missingRows([1, 2, 3, 5], [1, 2, 3, 4, 5])).toEqual([]);
    expect(missingRows([1, 2, 3, 5], [1, 3, 4, 5])).toEqual([2]);
    expect(missingRows([7], [])).toEqual([7]);
  });

  it('flags two servers of one database answering writable in the same poll', () => {
    const primaryAndStandby = [
      { serverId: 'a', writable: true },
      { serverId: 'b', writable: false },
    ];
    expect(isSplitBrain(primaryAndStandby)).toBe(false);
    const twoPrimaries = [
      { serverId: 'a', writable: true },
      { serverId: 'b', writable: true },
    ];
    expect(isSplitBrain(twoPrimaries)).toBe(true);
    expect(writableServers(twoPrimaries)).toEqual(['a', 'b']);
    // A server that did not answer is not counted either way.
    expect(
      isSplitBrain([
        { serverId: 'a', writable: true },
        { serverId: 'b', writable: undefined },
      ]),
    ).toBe(false);
  });

  it('measures the longest pause between acknowledged commits around a fault', () => {
    // Fault at 100: the last commit before it at 90, writes resume at 1100, then flow.
    expect(longestGap([10, 50, 90, 1100, 1110, 1120], 100, 2000)).toBe(1010);
    // Writes that never resume count until the end of the window.
    expect(longestGap([10, 90], 100, 3000)).toBe(2910);
    // Gaps after the window are not the fault's.
    expect(longestGap([90, 100, 110, 5000], 95, 200)).toBe(90);
  });

  it('fails a run on a lost row, a split brain or a stuck database, and only then', () => {
    expect(failures([fault({}), fault({ n: 2, kind: 'web-killed', firstCommitMs: NaN })])).toEqual([]);
    expect(failures([fault({ rowsLost: 3 })])).toEqual(['fault 1 (primary-crash): 3 acknowledged rows lost']);
    expect(failures([fault({ splitBrains: 1 })])).toHaveLength(1);
    expect(failures([fault({ stuck: true, wholeMs: NaN })])).toEqual(['fault 1 (primary-crash): not whole again within the bound']);
  });

  it('makes a row per fault kind with medians and maxima', () => {
    const rows = summarize(
      [
        fault({ wholeMs: 4000 }),
        fault({ n: 2, wholeMs: 6000, rowsLost: 2 }),
        fault({ n: 3, wholeMs: NaN, stuck: true }),
        fault({ n: 4, kind: 'web-killed', firstCommitMs: NaN }),
      ],
      ['primary-crash', 'primary-freeze', 'web-killed'],
    );
    expect(rows.map((r) => r.kind)).toEqual(['primary-crash', 'web-killed']);
    expect(rows[0]).toMatchObject({ count: 3, wholeMedianMs: 5000, wholeMaxMs: 6000, rowsLost: 2, stuck: 1 });
    expect(rows[1]!.firstCommitMedianMs).toBeNaN();
    expect(kindTable(rows)).toContain('| primary-crash | 3 | 900 / 900 | 5,000 / 6,000 | 1,000 / 1,000 | 2 | 0 | 1 | 0 | 0 | 0 |');
  });

  it('takes its settings from flags before the environment, and refuses kinds it cannot reach', () => {
    const s = chaosSettings(
      ['--faults', '5', '--seed', '42'],
      { CHAOS_FAULTS: '9', CHAOS_KINDS: 'primary-crash,standby-crash' },
      POSTGRES_FAULTS,
    );
    expect(s).toEqual({ faults: 5, seed: 42, kinds: ['primary-crash', 'standby-crash'], wholeBoundS: 60 });
    expect(() => chaosSettings([], { CHAOS_KINDS: 'web-killed' }, POSTGRES_FAULTS)).toThrow(/needs pgfleet's processes/);
    expect(() => chaosSettings([], { CHAOS_KINDS: 'meteor' }, POSTGRES_FAULTS)).toThrow(/unknown fault kind meteor/);
  });

  it('draws the same faults from the same seed', () => {
    const a = seeded(7);
    const b = seeded(7);
    const draws = Array.from({ length: 5 }, () => a());
    expect(Array.from({ length: 5 }, () => b())).toEqual(draws);
    expect(draws.every((x) => x >= 0 && x < 1)).toBe(true);
    const deck = shuffled(['a', 'b', 'c', 'd'], seeded(3));
    expect([...deck].sort()).toEqual(['a', 'b', 'c', 'd']);
    expect(shuffled(['a', 'b', 'c', 'd'], seeded(3))).toEqual(deck);
  });
});
