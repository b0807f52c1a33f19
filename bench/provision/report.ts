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
  return { n: sorted.length, medianMs: quantile(sorted, 0.5), p90Ms: quantile(sorted, 0.9), maxMs: sorted.at(-1) ?? NaN, minMs: sorted[0] ?? NaN };
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
    dedicated: { total: Stats; http: Stats; token: Stats; patch: Stats; provisioned: Stats; afterPatch: Stats; attempts: Stats; failed: number };
    sharedMilestones: (Stats & { name: string })[];
    dedicatedMilestones: (Stats & { name: string })[];
  };
  firstShared: SharedRun;
  shared: SharedRun[];
  dedicated: DedicatedRun[];
}

export const num = (n: number, digits = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '–');
export const ms = (n: number) => num(n, n < 100 ? 1 : 0);

export function markdown(r: Results): string {
  const m = r.machine;
  const s = r.summary;
  const met = (median: number, aim: number) => (Number.isFinite(median) ? (median < aim ? 'met' : 'not met') : 'no result');
  const row = (label: string, st: Stats, extra = '') => `| ${label} | ${st.n} | ${ms(st.medianMs)} | ${ms(st.p90Ms)} | ${ms(st.maxMs)} |${extra}`;
  const lines = [
    '# Provisioning benchmark',
    '',
    `${m.date} · commit ${m.commit} · ${m.nproc} CPUs (${m.cpu}) · ${num(m.memoryGiB, 1)} GiB · Node ${m.node} · ${m.postgres}`,
    `Load average (1/5/15 min) at start ${m.loadAverageAtStart.map((l) => num(l, 2)).join(' / ')}, at end ${m.loadAverageAtEnd.map((l) => num(l, 2)).join(' / ')}`,
    `Parameters: ${Object.entries(r.parameters).map(([k, v]) => `${k}=${v}`).join(', ')}`,
    '',
    '## POST /heroku/resources → a URL that answers `select 1`',
    '',
    '| plan | runs | median ms | p90 ms | max ms | aim | aim met (median) |',
    '|---|--:|--:|--:|--:|---|---|',
    `| first shared provision (creates the shared server) | ${s.firstShared.n} | ${ms(s.firstShared.medianMs)} | — | — | — | — |`,
    row('shared', s.shared.total, ` < ${num(r.aimsMs.shared)} ms | ${met(s.shared.total.medianMs, r.aimsMs.shared)} |`),
    row('dedicated', s.dedicated.total, ` < ${num(r.aimsMs.dedicated)} ms | ${met(s.dedicated.total.medianMs, r.aimsMs.dedicated)} |`),
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
    row('shared: POST → 200 with the config', s.shared.http),
    row('shared: 200 → `select 1` answered', s.shared.afterAnswer),
    row('dedicated: POST → 202', s.dedicated.http),
    row('dedicated: POST → grant exchanged at the platform', s.dedicated.token),
    row('dedicated: POST → PATCH config at the platform', s.dedicated.patch),
    row('dedicated: POST → actions/provision at the platform', s.dedicated.provisioned),
    row('dedicated: PATCH config → `select 1` answered', s.dedicated.afterPatch),
    '',
    `First shared provision (ms after the POST): ${r.firstShared.milestones.map((x) => `${x.name} ${ms(x.ms)}`).join(' → ')}.`,
    '',
    `Connections tried until \`select 1\` answered: shared median ${num(s.shared.attempts.medianMs, 1)}, max ${num(s.shared.attempts.maxMs)}; dedicated median ${num(s.dedicated.attempts.medianMs, 1)}, max ${num(s.dedicated.attempts.maxMs)}.`,
    '',
    '## Where the time goes',
    '',
    'Each milestone in ms after the POST: machine transitions (`resource:` / `server:` + the state entered, from the `transitions` table), calls the platform received, the HTTP answer, and the first `select 1`. Medians over runs, ordered by median.',
    '',
    '| dedicated milestone | median ms | p90 ms | max ms |',
    '|---|--:|--:|--:|',
    ...s.dedicatedMilestones.map((x) => `| ${x.name} | ${ms(x.medianMs)} | ${ms(x.p90Ms)} | ${ms(x.maxMs)} |`),
    '',
    '| shared milestone | median ms | p90 ms | max ms |',
    '|---|--:|--:|--:|',
    ...s.sharedMilestones.map((x) => `| ${x.name} | ${ms(x.medianMs)} | ${ms(x.p90Ms)} | ${ms(x.maxMs)} |`),
    '',
    '## Dedicated runs',
    '',
    '| run | total ms | 202 ms | grant exchanged ms | PATCH config ms | actions/provision ms |',
    '|--:|--:|--:|--:|--:|--:|',
    ...r.dedicated.map((d, i) => `| ${i + 1} | ${d.error ? `failed: ${d.error}` : ms(d.totalMs)} | ${ms(d.httpMs)} | ${ms(d.tokenMs)} | ${ms(d.patchMs)} | ${ms(d.provisionedMs)} |`),
    '',
    `Shared totals in run order (ms): ${r.shared.map((x) => (x.error ? 'failed' : num(x.totalMs))).join(', ')}.`,
    '',
    ...r.notes.map((n) => `- ${n}`),
  );
  return lines.join('\n') + '\n';
}

