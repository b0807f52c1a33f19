/**
 * The failover benchmark's results: the shape of each run, the statistics over runs, and
 * the markdown summary written to bench/results/failover.md.
 */
import { milestoneStats, ms, num, stats, type Machine, type Milestone, type Stats } from '../provision/report.ts';

export type Fault = 'crash' | 'hang';

export interface FailoverRun {
  /** 1-based, over all runs in the order they ran (crash and hang alternate). */
  run: number;
  fault: Fault;
  table: string;
  primaryBefore: string;
  standbyBefore: string;
  /** The primary once the resource was whole again. */
  primaryAfter: string | undefined;
  /** Postgres processes signalled: the postmaster (crash), or it and every child (hang). */
  signalled: number;
  /** Of a hang's frozen processes, those still there (not killed by the fence) when writes stopped. */
  frozenLeft: number | undefined;
  ackedBeforeFault: number;
  acked: number;
  /** Fault → first commit acknowledged through the resource URL after it (NumberedWriter.recoveryMs). */
  recoveryMs: number;
  /** Fault → the first row written on the promoted standby (its clock_timestamp()). */
  newPrimaryMs: number;
  /** Rows the old primary wrote after the fault: orphaned backends of a killed postmaster, or a commit under way. */
  oldPrimaryCommitsAfterFault: number;
  /** Fault → the last row written on the old primary (negative: before the fault). */
  lastOnOldPrimaryMs: number;
  /** The last row written on the old primary → the first on the promoted standby: how long writes stopped. */
  pauseMs: number;
  /** Fault → the resource whole again: available, the old primary back as its synchronous standby. */
  wholeMs: number;
  /** Acknowledged numbers not in the table afterwards, read through the resource URL. */
  missing: number[];
  /** The same, read on the old primary once it is back as the standby. */
  missingOnRejoined: number[];
  /** Machine transitions since the fault (`resource:`, `old primary:`, `old standby:` + state), and the writer's first commit. */
  milestones: Milestone[];
  error?: string;
  /** A failed run's account of the resource and its two servers, taken as it failed (failureNotes). */
  notes?: string[];
}

export interface Setting {
  name: string;
  value: number | string;
  default: number | string;
}

export interface KindSummary {
  runs: number;
  failed: number;
  recovery: Stats;
  newPrimary: Stats;
  pause: Stats;
  whole: Stats;
  oldPrimaryCommitsAfterFault: number;
  missing: number;
  missingOnRejoined: number;
  milestones: (Stats & { name: string })[];
}

export interface Results {
  machine: Machine & { tenantPostgres: string };
  settings: Setting[];
  parameters: Record<string, number>;
  aimsMs: Record<Fault, number>;
  notes: string[];
  fleets: FleetResult[];
}

/** The runs made with a fleet of `size` other servers around the measured resource. */
export interface FleetResult {
  size: number;
  /** Servers of the fleet's resources, as the control database has them. */
  servers: number;
  /** How often the fleet's servers were observed while the runs went on. */
  observationsPerServerPerMinute: number;
  /** Provisioning the servers added for this size (0: none were added). */
  provisionMs: number;
  summary: Record<Fault, KindSummary>;
  runs: FailoverRun[];
}

export function summarize(runs: FailoverRun[]): KindSummary {
  const ok = runs.filter((r) => !r.error);
  return {
    runs: runs.length,
    failed: runs.length - ok.length,
    recovery: stats(ok.map((r) => r.recoveryMs)),
    newPrimary: stats(ok.map((r) => r.newPrimaryMs)),
    pause: stats(ok.map((r) => r.pauseMs)),
    whole: stats(ok.map((r) => r.wholeMs)),
    oldPrimaryCommitsAfterFault: ok.reduce((n, r) => n + r.oldPrimaryCommitsAfterFault, 0),
    missing: runs.reduce((n, r) => n + r.missing.length, 0),
    missingOnRejoined: runs.reduce((n, r) => n + r.missingOnRejoined.length, 0),
    milestones: milestoneStats(runs),
  };
}

const short = (id: string | undefined) => (id ? id.slice(0, 8) : '–');

export function markdown(r: Results): string {
  const m = r.machine;
  const faults: Fault[] = ['crash', 'hang'];
  const met = (median: number, aim: number) => (Number.isFinite(median) ? (median < aim ? 'met' : 'not met') : 'no result');
  const lines = [
    '# Failover benchmark',
    '',
    `${m.date} · commit ${m.commit} · ${m.nproc} CPUs (${m.cpu}) · ${num(m.memoryGiB, 1)} GiB · Node ${m.node}`,
    `Control database: ${m.postgres}; tenant servers: ${m.tenantPostgres}`,
    `Load average (1/5/15 min) at start ${m.loadAverageAtStart.map((l) => num(l, 2)).join(' / ')}, ` +
      `at end ${m.loadAverageAtEnd.map((l) => num(l, 2)).join(' / ')}`,
    `pgfleet settings: ${r.settings
      .map((s) => `${s.name}=${s.value}${s.value === s.default ? ' (default)' : ` (default ${s.default})`}`)
      .join(', ')}`,
    `Parameters: ${Object.entries(r.parameters)
      .map(([k, v]) => `${k}=${v}`)
      .join(', ')}`,
    '',
    '## Fault → writes on the promoted standby',
    '',
    'Recovery: the fault → the first row written on the promoted standby, the aim judged by its median. ' +
      "The writer's own figure (the fault → its first acknowledged commit, NumberedWriter.recoveryMs) is beside it: " +
      'it can be a commit under way at the fault, or one an orphaned backend of the killed postmaster took (see the notes).',
    '',
    '| other servers | fault | runs | recovery median ms | p90 ms | max ms | aim (median) | aim met | ' +
      'first acknowledged commit, median ms | writes stopped for, median ms | acknowledged rows missing | ' +
      'missing on the rejoined old primary | whole again, median ms | p90 ms | max ms |',
    '|--:|---|--:|--:|--:|--:|---|---|--:|--:|--:|--:|--:|--:|--:|',
    ...r.fleets.flatMap((fleet) =>
      faults.map((f) => {
        const s = fleet.summary[f];
        return (
          `| ${fleet.size} | ${f} | ${s.newPrimary.n} | ${ms(s.newPrimary.medianMs)} | ${ms(s.newPrimary.p90Ms)} | ` +
          `${ms(s.newPrimary.maxMs)} | < ${num(r.aimsMs[f])} ms | ${met(s.newPrimary.medianMs, r.aimsMs[f])} | ` +
          `${ms(s.recovery.medianMs)} | ${ms(s.pause.medianMs)} | ${s.missing} | ${s.missingOnRejoined} | ` +
          `${ms(s.whole.medianMs)} | ${ms(s.whole.p90Ms)} | ${ms(s.whole.maxMs)} |`
        );
      }),
    ),
    '',
    ...r.fleets.map(
      (fleet) =>
        `With ${fleet.size} other servers: ${fleet.servers} servers of other resources, ` +
        `observed ${num(fleet.observationsPerServerPerMinute, 1)} times a minute each during the runs` +
        `${fleet.provisionMs > 0 ? `; provisioning those added took ${num(fleet.provisionMs / 1000, 1)} s` : ''}. ` +
        'Rows the old primary wrote after the fault (and the standby had, or they would not be in the table): ' +
        `crash ${fleet.summary.crash.oldPrimaryCommitsAfterFault}, hang ${fleet.summary.hang.oldPrimaryCommitsAfterFault}.`,
    ),
    '',
  ];
  const all = r.fleets.flatMap((fleet) => fleet.runs.map((run) => ({ ...run, fleet: fleet.size })));
  const failed = all.filter((x) => x.error);
  if (failed.length > 0) {
    lines.push(`Failed runs (left out of the timings; their missing rows, if counted, are in the totals): ${failed.length}.`);
    for (const run of failed) {
      lines.push(`- run ${run.run} (${run.fault}, ${run.fleet} other servers): ${run.error}`);
      for (const note of run.notes ?? []) lines.push(`  - ${note}`);
    }
    lines.push('');
  }
  lines.push(
    '## Where the time goes',
    '',
    'In ms after the fault: the first time each state was entered (`resource:`, `old primary:`, `old standby:`, ' +
      "from the transitions table), the writer's first acknowledged commit, " +
      'the last row written on the old primary and the first on the promoted standby (`table:`), ' +
      'and the resource whole again. Medians over runs, ordered by median.',
    '',
  );
  for (const fleet of r.fleets)
    for (const f of faults) {
      lines.push(
        `| ${f}, ${fleet.size} other servers: milestone | runs | median ms | p90 ms | max ms |`,
        '|---|--:|--:|--:|--:|',
        ...fleet.summary[f].milestones.map((x) => `| ${x.name} | ${x.n} | ${ms(x.medianMs)} | ${ms(x.p90Ms)} | ${ms(x.maxMs)} |`),
        '',
      );
    }
  lines.push(
    '## Runs',
    '',
    '| run | other servers | fault | recovery ms | first acknowledged ms | old primary wrote after the fault (last at ms) | ' +
      'writes stopped for ms | whole again ms | acked before fault | acked | missing | missing on rejoined | primary before → after | ' +
      'frozen left by the fence |',
    '|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|',
    ...all.map(
      (x) =>
        `| ${x.run} | ${x.fleet} | ${x.fault} | ${x.error ? `failed: ${x.error}` : ms(x.newPrimaryMs)} | ${ms(x.recoveryMs)} | ` +
        `${x.oldPrimaryCommitsAfterFault} (${ms(x.lastOnOldPrimaryMs)}) | ${ms(x.pauseMs)} | ${ms(x.wholeMs)} | ` +
        `${x.ackedBeforeFault} | ${x.acked} | ${x.missing.length} | ${x.missingOnRejoined.length} | ` +
        `${short(x.primaryBefore)} → ${short(x.primaryAfter)} | ` +
        `${x.frozenLeft === undefined ? '—' : `${x.frozenLeft} of ${x.signalled}`} |`,
    ),
    '',
    ...r.notes.map((n) => `- ${n}`),
  );
  return lines.join('\n') + '\n';
}
