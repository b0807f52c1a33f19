/**
 * What a chaos run judges, as pure functions over what it recorded: the rows a writer had
 * acknowledged against what the database holds, the servers that answered as writable in
 * one poll, the longest pause between acknowledged commits, and the table per fault kind.
 * Kept apart from the run so that each verdict has a unit test that can fail.
 */

/** Acknowledged numbers that are not among the rows read back: rows lost. */
export function missingRows(acknowledged: readonly number[], present: Iterable<number>): number[] {
  const have = new Set(present);
  return acknowledged.filter((n) => !have.has(n));
}

/** One server's answer to `select pg_is_in_recovery()` in a poll: undefined when it did not answer. */
export interface Answer {
  serverId: string;
  writable: boolean | undefined;
}

/** The servers of one database that answered as writable (not in recovery) in the same poll: more than one is a split brain. */
export function writableServers(answers: readonly Answer[]): string[] {
  return answers.filter((a) => a.writable === true).map((a) => a.serverId);
}

export function isSplitBrain(answers: readonly Answer[]): boolean {
  return writableServers(answers).length > 1;
}

/**
 * The longest time (ms) without an acknowledged commit around a fault: from the last commit
 * acknowledged at or before `from` (or `from` itself when there is none) through every
 * commit until `to`, and from the last of them to `to` (writes that never resumed count
 * until then). `ackedAt` is ascending.
 */
export function longestGap(ackedAt: readonly number[], from: number, to: number): number {
  let last = from;
  for (const at of ackedAt) {
    if (at <= from) last = at;
    else break;
  }
  let gap = 0;
  for (const at of ackedAt) {
    if (at <= last) continue;
    if (at > to) break;
    gap = Math.max(gap, at - last);
    last = at;
  }
  return Math.max(gap, to - last);
}

/** What one fault did and what was measured after it. */
export interface FaultResult {
  /** 1-based, in the order the faults were made. */
  n: number;
  kind: string;
  /** The database the fault was aimed at (for faults of pgfleet's own processes: every database is watched). */
  resourceId: string;
  /** Wall ms since the epoch. */
  at: number;
  /** Fault → the first commit written on a server other than the primary before the fault; NaN without a failover. */
  firstCommitMs: number;
  /** Fault → every database whole again; NaN when not within the bound (stuck). */
  wholeMs: number;
  /** The longest pause between acknowledged commits of any writer, from the fault to whole again (or the bound). */
  writeGapMs: number;
  rowsLost: number;
  /** Distinct episodes of two servers of one database answering writable in the same poll. */
  splitBrains: number;
  stuck: boolean;
  /** Incidents opened since the fault on the databases or their servers, and of those, still open at the end. */
  incidentsOpened: number;
  incidentsUnresolved: number;
  /** Jobs dead since the fault. */
  deadJobs: number;
  /** pgfleet's processes that exited by themselves (and were started again) from the fault to its end. */
  crashes: number;
  /** What the tool saw go wrong beyond the figures (a failover with no incident, a read-back that failed…). */
  notes: string[];
}

export function median(values: readonly number[]): number {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function max(values: readonly number[]): number {
  const finite = values.filter(Number.isFinite);
  return finite.length ? Math.max(...finite) : NaN;
}

export interface KindRow {
  kind: string;
  count: number;
  firstCommitMedianMs: number;
  firstCommitMaxMs: number;
  wholeMedianMs: number;
  wholeMaxMs: number;
  writeGapMedianMs: number;
  writeGapMaxMs: number;
  rowsLost: number;
  splitBrains: number;
  stuck: number;
  incidentsUnresolved: number;
  deadJobs: number;
  crashes: number;
}

/** One row per fault kind, in the order the kinds are given. */
export function summarize(faults: readonly FaultResult[], kinds: readonly string[]): KindRow[] {
  return kinds
    .map((kind) => {
      const of = faults.filter((f) => f.kind === kind);
      const sum = (pick: (f: FaultResult) => number) => of.reduce((s, f) => s + pick(f), 0);
      return {
        kind,
        count: of.length,
        firstCommitMedianMs: median(of.map((f) => f.firstCommitMs)),
        firstCommitMaxMs: max(of.map((f) => f.firstCommitMs)),
        wholeMedianMs: median(of.map((f) => f.wholeMs)),
        wholeMaxMs: max(of.map((f) => f.wholeMs)),
        writeGapMedianMs: median(of.map((f) => f.writeGapMs)),
        writeGapMaxMs: max(of.map((f) => f.writeGapMs)),
        rowsLost: sum((f) => f.rowsLost),
        splitBrains: sum((f) => f.splitBrains),
        stuck: sum((f) => (f.stuck ? 1 : 0)),
        incidentsUnresolved: sum((f) => f.incidentsUnresolved),
        deadJobs: sum((f) => f.deadJobs),
        crashes: sum((f) => f.crashes),
      };
    })
    .filter((row) => row.count > 0);
}

/** What makes the run fail (the exit code): any row lost, any split brain, any database stuck. */
export function failures(faults: readonly FaultResult[]): string[] {
  return faults.flatMap((f) => [
    ...(f.rowsLost > 0 ? [`fault ${f.n} (${f.kind}): ${f.rowsLost} acknowledged rows lost`] : []),
    ...(f.splitBrains > 0
      ? [`fault ${f.n} (${f.kind}): two writable primaries ${f.splitBrains} time${f.splitBrains === 1 ? '' : 's'}`]
      : []),
    ...(f.stuck ? [`fault ${f.n} (${f.kind}): not whole again within the bound`] : []),
  ]);
}

const ms = (v: number) => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : '–');

/** The table per fault kind, in markdown. */
export function kindTable(rows: readonly KindRow[]): string {
  return [
    '| fault | count | first commit on new primary, median / max ms | whole again, median / max ms | write gap, median / max ms | ' +
      'rows lost | split-brains | stuck | incidents left open | dead jobs | process crashes |',
    '| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |',
    ...rows.map(
      (r) =>
        `| ${r.kind} | ${r.count} | ${ms(r.firstCommitMedianMs)} / ${ms(r.firstCommitMaxMs)} | ` +
        `${ms(r.wholeMedianMs)} / ${ms(r.wholeMaxMs)} | ${ms(r.writeGapMedianMs)} / ${ms(r.writeGapMaxMs)} | ` +
        `${r.rowsLost} | ${r.splitBrains} | ${r.stuck} | ${r.incidentsUnresolved} | ${r.deadJobs} | ${r.crashes} |`,
    ),
  ].join('\n');
}
