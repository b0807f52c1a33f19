/**
 * The provisioning benchmark's results: the shape of each run, the statistics over runs,
 * and the markdown summary written to bench/results/provision.md.
 */
import type { Host } from '../support.ts';

export interface Milestone {
  /** `resource:available`, `server:starting.verifying`, `platform:PATCH config`, … */
  name: string;
  /** Milliseconds after t0. */
  ms: number;
}

export interface SharedRun {
  id: string;
  /** POST → a `select 1` answered through the returned URL. */
  totalMs: number;
  /** POST → its 200 answer (with the config). */
  httpMs: number;
  /** Connections tried until `select 1` answered. */
  attempts: number;
  milestones: Milestone[];
  error?: string;
}

export interface DedicatedRun {
  id: string;
  /** POST → a `select 1` answered through the URL the platform was handed. */
  totalMs: number;
  /** POST → its 202 answer. */
  httpMs: number;
  /** POST → the OAuth grant exchange reached the platform. */
  tokenMs: number;
  /** POST → PATCH {callback_url}/config reached the platform. */
  patchMs: number;
  /** POST → POST {callback_url}/actions/provision reached the platform. */
  provisionedMs: number;
  attempts: number;
  milestones: Milestone[];
  error?: string;
}

export interface BurstRun {
  id: string;
  /** When its POST went, ms after the burst began. */
  postedMs: number;
  /** 200: the config came with the answer; 202: it came later by the platform's PATCH; 0: no answer. */
  status: number;
  /** POST → its answer. */
  answerMs: number;
  /** POST → the config in hand: the 200 answer, or the PATCH after a 202. */
  configMs: number;
  /** POST → a `select 1` answered through the URL of the config. */
  readyMs: number;
  attempts: number;
  milestones: Milestone[];
  error?: string;
}

/** Worker time spent on one task over the burst. */
export interface JobTime {
  task: string;
  count: number;
  seconds: number;
}

export interface Burst {
  size: number;
  timeoutSeconds: number;
  /** First POST → the last run ready (or given up). */
  wallMs: number;
  /**
   * While the burst ran: the share of the machine's CPU time busy and waiting on I/O (all cores, any process),
   * this process' CPU seconds (pgfleet's web, worker and clock, and the bench's clients), the control database's transactions.
   */
  load: { machineBusy: number; machineIowait: number; processCpuSeconds: number; controlTransactions: number };
  runs: BurstRun[];
  jobs: JobTime[];
  /** Transitions on `step.failed` since the burst began: a step that failed and was retried. */
  stepFailures: { entity: string; machine: string; state: string; ms: number; error: string | null }[];
  /** Jobs that died since the burst began. */
  deadJobs: { task: string; entity: string | null; error: string | null }[];
  /** Every live shared server after the burst; `openedMs` after the burst began. */
  sharedServers: { id: string; openedInBurst: boolean; openedMs: number; availableMs: number | null; tenants: number }[];
}

export interface BurstSummary {
  answered200: number;
  answered202: number;
  failed: number;
  answer: Stats;
  answer200: Stats;
  answer202: Stats;
  /** POST → PATCH config, of the 202s. */
  patch202: Stats;
  ready: Stats;
  ready200: Stats;
  ready202: Stats;
  stepFailures: number;
  deadJobs: number;
  serversOpened: number;
  milestones: (Stats & { name: string })[];
}

export interface Stats {
  n: number;
  medianMs: number;
  p90Ms: number;
  maxMs: number;
  minMs: number;
}

/** Linear interpolation between closest ranks (numpy's default). */
export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function stats(values: number[]): Stats {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  return {
    n: sorted.length,
    medianMs: quantile(sorted, 0.5),
    p90Ms: quantile(sorted, 0.9),
    maxMs: sorted.at(-1) ?? NaN,
    minMs: sorted[0] ?? NaN,
  };
}

/** Each milestone's offsets over the runs that reached it, ordered by median. */
export function milestoneStats(runs: { milestones: Milestone[]; error?: string }[]): (Stats & { name: string })[] {
  const byName = new Map<string, number[]>();
  for (const run of runs.filter((r) => !r.error)) {
    const seen = new Set<string>();
    for (const m of run.milestones) {
      if (seen.has(m.name)) continue; // the first time a state was reached
      seen.add(m.name);
      byName.set(m.name, [...(byName.get(m.name) ?? []), m.ms]);
    }
  }
  return [...byName].map(([name, values]) => ({ name, ...stats(values) })).sort((a, b) => a.medianMs - b.medianMs);
}

export function burstSummary(b: Burst): BurstSummary {
  const of = (status: number) => b.runs.filter((r) => r.status === status && !r.error);
  const ok = b.runs.filter((r) => !r.error);
  return {
    answered200: b.runs.filter((r) => r.status === 200).length,
    answered202: b.runs.filter((r) => r.status === 202).length,
    failed: b.runs.length - ok.length,
    answer: stats(b.runs.map((r) => r.answerMs)),
    answer200: stats(of(200).map((r) => r.answerMs)),
    answer202: stats(of(202).map((r) => r.answerMs)),
    patch202: stats(of(202).map((r) => r.configMs)),
    ready: stats(ok.map((r) => r.readyMs)),
    ready200: stats(of(200).map((r) => r.readyMs)),
    ready202: stats(of(202).map((r) => r.readyMs)),
    stepFailures: b.stepFailures.length,
    deadJobs: b.deadJobs.length,
    serversOpened: b.sharedServers.filter((s) => s.openedInBurst).length,
    milestones: milestoneStats(b.runs),
  };
}

export interface Machine extends Host {
  postgres: string;
  commit: string;
  loadAverageAtStart: number[];
  loadAverageAtEnd: number[];
}

export interface Results {
  machine: Machine;
  parameters: Record<string, number>;
  aimsMs: { shared: number; dedicated: number };
  notes: string[];
  summary: {
    firstShared: Stats;
    shared: { total: Stats; http: Stats; afterAnswer: Stats; attempts: Stats; failed: number };
    dedicated: {
      total: Stats;
      http: Stats;
      token: Stats;
      patch: Stats;
      provisioned: Stats;
      afterPatch: Stats;
      attempts: Stats;
      failed: number;
    };
    sharedMilestones: (Stats & { name: string })[];
    dedicatedMilestones: (Stats & { name: string })[];
    burst: BurstSummary;
  };
  firstShared: SharedRun;
  shared: SharedRun[];
  dedicated: DedicatedRun[];
  burst: Burst;
}

export const num = (n: number, digits = 0) =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '–';
export const ms = (n: number) => num(n, n < 100 ? 1 : 0);

const statRow = (label: string, st: Stats, extra = '') =>
  `| ${label} | ${st.n} | ${ms(st.medianMs)} | ${ms(st.p90Ms)} | ${ms(st.maxMs)} |${extra}`;

/** How many times each message came, most first: ` ("message" × n; …)`. */
function tally(messages: (string | null)[]): string {
  if (messages.length === 0) return '';
  const counts = new Map<string, number>();
  for (const m of messages) counts.set((m ?? 'no message').slice(0, 160), (counts.get((m ?? 'no message').slice(0, 160)) ?? 0) + 1);
  return ` (${[...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([m, n]) => `"${m}" × ${n}`)
    .join('; ')})`;
}

function burstLines(b: Burst, s: BurstSummary): string[] {
  const failed = b.runs.filter((x) => x.error);
  return [
    '## Burst: shared provisions POSTed at once',
    '',
    `After the sequential runs, ${b.size} shared provisions (each its own uuid) were POSTed together to the same running system and ` +
      `each followed to a URL that answers \`select 1\` (verify-full) within ${b.timeoutSeconds} s. ` +
      `Answered 200 with the config: **${s.answered200}**; 202, the config delivered later by the platform's PATCH: ` +
      `**${s.answered202}**; failed for good: **${s.failed}**. First POST → the last one ready: ${num(b.wallMs / 1000, 1)} s.`,
    '',
    '| measure | runs | median ms | p90 ms | max ms |',
    '|---|--:|--:|--:|--:|',
    statRow('POST → answer (all)', s.answer),
    statRow('POST → 200 with the config', s.answer200),
    statRow('POST → 202', s.answer202),
    statRow('202: POST → PATCH config at the platform', s.patch202),
    statRow('POST → `select 1` answered (all)', s.ready),
    statRow('POST → `select 1` answered, of the 200s', s.ready200),
    statRow('POST → `select 1` answered, of the 202s', s.ready202),
    '',
    ...(failed.length > 0 ? [...failed.map((x) => `- failed ${x.id}: ${x.error}`), ''] : []),
    `While it ran, the machine's CPUs were ${num(b.load.machineBusy * 100)}% busy and ` +
      `${num(b.load.machineIowait * 100)}% waiting on I/O (every process on the machine); ` +
      "the bench's process (pgfleet's web, worker and clock, " +
      `and the bench's own clients) used ${num(b.load.processCpuSeconds, 1)} CPU-seconds; ` +
      `the control database committed ${num(b.load.controlTransactions)} transactions.`,
    '',
    `Steps that failed on the way and were retried (\`step.failed\` transitions since the burst began): ` +
      `**${s.stepFailures}**${tally(b.stepFailures.map((f) => `${f.state}: ${f.error}`))}. ` +
      `Dead jobs: **${s.deadJobs}**${tally(b.deadJobs.map((j) => `${j.task}: ${j.error}`))}. ` +
      `Shared servers the burst opened: **${s.serversOpened}**.`,
    '',
    '| shared server | opened, ms after the burst began | available, ms after the burst began | tenants after the burst |',
    '|---|--:|--:|--:|',
    ...b.sharedServers.map(
      (x) =>
        `| ${x.id.slice(0, 8)}${x.openedInBurst ? '' : ' (before the burst)'} | ${x.openedInBurst ? ms(x.openedMs) : '—'} | ` +
        `${x.openedInBurst && x.availableMs !== null ? ms(x.availableMs) : '—'} | ${x.tenants} |`,
    ),
    '',
    'Where the time goes: each milestone in ms after its own POST, over the runs that reached it, ordered by median.',
    '',
    '| burst milestone | runs | median ms | p90 ms | max ms |',
    '|---|--:|--:|--:|--:|',
    ...s.milestones.map((x) => statRow(x.name, x)),
    '',
    "Worker time by task while the burst ran (pgfleet_job_duration_seconds: claim → commit, summed over the worker's slots):",
    '',
    '| task | jobs | total s | mean ms |',
    '|---|--:|--:|--:|',
    ...b.jobs.map((j) => `| ${j.task} | ${j.count} | ${num(j.seconds, 1)} | ${ms((j.seconds * 1000) / j.count)} |`),
    '',
  ];
}

export function markdown(r: Results): string {
  const m = r.machine;
  const s = r.summary;
  const met = (median: number, aim: number) => (Number.isFinite(median) ? (median < aim ? 'met' : 'not met') : 'no result');
  const lines = [
    '# Provisioning benchmark',
    '',
    `${m.date} · commit ${m.commit} · ${m.nproc} CPUs (${m.cpu}) · ${num(m.memoryGiB, 1)} GiB · Node ${m.node} · ${m.postgres}`,
    `Load average (1/5/15 min) at start ${m.loadAverageAtStart.map((l) => num(l, 2)).join(' / ')}, ` +
      `at end ${m.loadAverageAtEnd.map((l) => num(l, 2)).join(' / ')}`,
    `Parameters: ${Object.entries(r.parameters)
      .map(([k, v]) => `${k}=${v}`)
      .join(', ')}`,
    '',
    '## POST /heroku/resources → a URL that answers `select 1`',
    '',
    '| plan | runs | median ms | p90 ms | max ms | aim | aim met (median) |',
    '|---|--:|--:|--:|--:|---|---|',
    `| first shared provision (creates the shared server) | ${s.firstShared.n} | ${ms(s.firstShared.medianMs)} | — | — | — | — |`,
    statRow('shared', s.shared.total, ` < ${num(r.aimsMs.shared)} ms | ${met(s.shared.total.medianMs, r.aimsMs.shared)} |`),
    statRow('dedicated', s.dedicated.total, ` < ${num(r.aimsMs.dedicated)} ms | ${met(s.dedicated.total.medianMs, r.aimsMs.dedicated)} |`),
    '',
  ];
  if (s.shared.failed > 0 || s.dedicated.failed > 0) {
    lines.push(`Failed runs (left out of the figures): shared ${s.shared.failed}, dedicated ${s.dedicated.failed}.`);
    for (const run of [...r.shared, ...r.dedicated].filter((x) => x.error)) lines.push(`- ${run.id}: ${run.error}`);
    lines.push('');
  }
  lines.push(
    '## Parts',
    '',
    '| measure | runs | median ms | p90 ms | max ms |',
    '|---|--:|--:|--:|--:|',
    statRow('shared: POST → 200 with the config', s.shared.http),
    statRow('shared: 200 → `select 1` answered', s.shared.afterAnswer),
    statRow('dedicated: POST → 202', s.dedicated.http),
    statRow('dedicated: POST → grant exchanged at the platform', s.dedicated.token),
    statRow('dedicated: POST → PATCH config at the platform', s.dedicated.patch),
    statRow('dedicated: POST → actions/provision at the platform', s.dedicated.provisioned),
    statRow('dedicated: PATCH config → `select 1` answered', s.dedicated.afterPatch),
    '',
    `First shared provision (ms after the POST): ${r.firstShared.milestones.map((x) => `${x.name} ${ms(x.ms)}`).join(' → ')}.`,
    '',
    `Connections tried until \`select 1\` answered: shared median ${num(s.shared.attempts.medianMs, 1)}, ` +
      `max ${num(s.shared.attempts.maxMs)}; dedicated median ${num(s.dedicated.attempts.medianMs, 1)}, ` +
      `max ${num(s.dedicated.attempts.maxMs)}.`,
    '',
    '## Where the time goes',
    '',
    'Each milestone in ms after the POST: machine transitions (`resource:` / `server:` + the state entered, ' +
      'from the `transitions` table), calls the platform received, the HTTP answer, and the first `select 1`. ' +
      'Medians over runs, ordered by median.',
    '',
    '| dedicated milestone | median ms | p90 ms | max ms |',
    '|---|--:|--:|--:|',
    ...s.dedicatedMilestones.map((x) => `| ${x.name} | ${ms(x.medianMs)} | ${ms(x.p90Ms)} | ${ms(x.maxMs)} |`),
    '',
    '| shared milestone | median ms | p90 ms | max ms |',
    '|---|--:|--:|--:|',
    ...s.sharedMilestones.map((x) => `| ${x.name} | ${ms(x.medianMs)} | ${ms(x.p90Ms)} | ${ms(x.maxMs)} |`),
    '',
    ...burstLines(r.burst, s.burst),
    '## Dedicated runs',
    '',
    '| run | total ms | 202 ms | grant exchanged ms | PATCH config ms | actions/provision ms |',
    '|--:|--:|--:|--:|--:|--:|',
    ...r.dedicated.map(
      (d, i) =>
        `| ${i + 1} | ${d.error ? `failed: ${d.error}` : ms(d.totalMs)} | ` +
        `${ms(d.httpMs)} | ${ms(d.tokenMs)} | ${ms(d.patchMs)} | ${ms(d.provisionedMs)} |`,
    ),
    '',
    `Shared totals in run order (ms): ${r.shared.map((x) => (x.error ? 'failed' : num(x.totalMs))).join(', ')}.`,
    '',
    ...r.notes.map((n) => `- ${n}`),
  );
  return lines.join('\n') + '\n';
}
