import type { ClaimPlan } from './explain.ts';
import type { DrainResult, LatencyResult } from './measure.ts';
import type { SoakResult } from './soak.ts';
import type { Host } from '../support.ts';

export interface Machine extends Host {
  postgres: string;
  postgresSettings: Record<string, string>;
  commit: string;
}

export interface SettingResult {
  contender: string;
  setting: string;
  perEntity: boolean;
  knobs: string;
  drain: DrainResult;
  latency: LatencyResult;
  /** Errors the library emitted (pg-boss: swallowed fetch failures, e.g. singleton unique violations). */
  libraryErrors: number;
  /** Distinct messages of promise rejections nobody handled (pg-boss's unawaited complete()). */
  unhandledRejections: string[];
  /** The run of this setting failed outright; the message says why. */
  error?: string;
}

export interface Results {
  machine: Machine;
  /** The peers' installed versions (package.json pins them). */
  versions: Record<string, string>;
  parameters: Record<string, number>;
  notes: string[];
  settings: SettingResult[];
  soak: SoakResult | { error: string } | undefined;
  claimPlans: ClaimPlan[];
}

const num = (n: number, digits = 0) =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '–';
const mib = (bytes: number) => `${num(bytes / 1024 / 1024, 1)} MiB`;

export function markdown(r: Results): string {
  const m = r.machine;
  const lines = [
    '# Queue benchmark',
    '',
    `${m.date} · commit ${m.commit} · ${m.nproc} CPUs (${m.cpu}) · ${num(m.memoryGiB, 1)} GiB · Node ${m.node} · ${m.postgres}`,
    `Postgres settings: ${Object.entries(m.postgresSettings)
      .map(([k, v]) => `${k}=${v}`)
      .join(', ')}`,
    `Versions: ${Object.entries(r.versions)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
    `Parameters: ${Object.entries(r.parameters)
      .map(([k, v]) => `${k}=${v}`)
      .join(', ')}`,
    '',
    '| contender | setting | per-entity serialization | jobs/s (median drain) | median pickup ms | p99 pickup ms | knobs |',
    '|---|---|---|--:|--:|--:|---|',
  ];
  for (const s of r.settings) {
    if (s.error) {
      lines.push(`| ${s.contender} | ${s.setting} | ${s.perEntity ? 'yes' : 'no'} | failed | | | ${s.error} |`);
      continue;
    }
    const d = s.drain;
    const l = s.latency;
    const runs = d.runs && d.runs.length > 1 ? ` (${num(Math.min(...d.runs))}–${num(Math.max(...d.runs))})` : '';
    const capped = d.capped ? ` (capped: ${num(d.completed)}/${num(d.jobs)} in ${num(d.seconds)} s)` : '';
    const lb = l.lowerBound ? '≥ ' : '';
    const rejected = s.unhandledRejections.length > 0 ? ` (unhandled: ${s.unhandledRejections.join('; ')})` : '';
    const errors = s.libraryErrors > 0 ? `; ${num(s.libraryErrors)} library errors${rejected}` : '';
    lines.push(
      `| ${s.contender} | ${s.setting} | ${s.perEntity ? 'yes' : 'no'} | ${num(d.jobsPerSecond)}${runs}${capped} | ` +
        `${lb}${num(l.medianMs, 1)} | ${lb}${num(l.p99Ms, 1)} | ${s.knobs}${errors} |`,
    );
  }
  lines.push('', ...r.notes.map((n) => `- ${n}`), '', '## Soak (pgfleet, per-entity on)', '');
  const soak = r.soak;
  if (!soak) lines.push('Not run.');
  else if ('error' in soak) lines.push(`Failed: ${soak.error}`);
  else {
    lines.push(
      `${num(soak.completed)} of ${num(soak.jobs)} jobs in ${num(soak.seconds, 1)} s ` +
        `(${num(soak.completed / soak.seconds)} jobs/s overall)${soak.capped ? ' — CAPPED before the end' : ''}; ${soak.settings}.`,
      '',
      `- first window: ${num(soak.firstWindowJobsPerSecond)} jobs/s; last window: ${num(soak.lastWindowJobsPerSecond)} jobs/s; ` +
        `last/first = ${num(soak.lastOverFirst * 100)}% (aim ≥ 80%)`,
      `- peak window: ${num(soak.peakWindowJobsPerSecond)} jobs/s; last/peak = ${num(soak.lastOverPeak * 100)}%`,
      `- jobs table (pg_total_relation_size): start ${mib(soak.tableBytes.start)}, middle ${mib(soak.tableBytes.middle)}, ` +
        `end ${mib(soak.tableBytes.end)}, max sampled ${mib(soak.tableBytes.max)}`,
      `- autovacuum runs on jobs: ${soak.autovacuums}; dead tuples at end: ${num(soak.deadTuplesAtEnd)}`,
      '',
      '| jobs started | window s | jobs/s | jobs table | dead rows | autovacuums so far |',
      '|--:|--:|--:|--:|--:|--:|',
      ...soak.windows.map(
        (w) =>
          `| ${num(w.upTo)} | ${num(w.seconds, 1)} | ${num(w.jobsPerSecond)} | ` +
          `${mib(w.tableBytes)} | ${num(w.deadTuples)} | ${w.autovacuums} |`,
      ),
    );
  }
  if (r.claimPlans.length > 0) lines.push('', "## Where pgfleet's time goes: EXPLAIN ANALYZE of claimJobs", '');
  for (const p of r.claimPlans) {
    lines.push(
      `Per-entity ${p.perEntity ? 'on' : 'off'}, ${p.variant}, ${num(p.jobsInTable)} pending jobs, limit ${p.limit}: ` +
        `${num(p.executionMs, 1)} ms.`,
      '',
      '```',
      p.plan,
      '```',
      '',
    );
  }
  return lines.join('\n') + '\n';
}
