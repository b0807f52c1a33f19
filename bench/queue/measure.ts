import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BenchJob, QueueUnderTest } from './contenders.ts';

/** Wall-clock milliseconds with sub-ms resolution (Date.now() rounds to 1 ms). */
export const wallMs = (): number => performance.timeOrigin + performance.now();

/** 1,000 entities: a drain of 20,000 gives each entity 20 jobs. */
export const ENTITIES = Array.from({ length: 1000 }, () => randomUUID());

/** Job i belongs to entity i mod 1000, so consecutive jobs are of different entities (interleaved). */
export function makeJobs(n: number, perEntity: boolean, offset = 0): BenchJob[] {
  const t = wallMs();
  return Array.from({ length: n }, (_, i) => ({
    entityId: perEntity ? ENTITIES[(offset + i) % ENTITIES.length]! : null,
    t,
  }));
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** Where the running workers report each handler start; the phases swap the callback. */
export interface Sink {
  onJob: (t: number) => void;
}

export interface DrainResult {
  jobs: number;
  completed: number;
  seconds: number;
  jobsPerSecond: number;
  /** The cap ran out before the queue was empty: jobs/s is from the jobs done by then. */
  capped: boolean;
  /** jobs/s of each drain, in order, when this one is their median. */
  runs?: number[];
}

/** The drain of median rate, with the rates of all the drains it was chosen from. */
export function medianDrain(drains: DrainResult[]): DrainResult {
  const byRate = [...drains].sort((a, b) => a.jobsPerSecond - b.jobsPerSecond);
  const median = byRate[Math.floor((byRate.length - 1) / 2)];
  if (!median) throw new Error('no drain to take the median of');
  return { ...median, runs: drains.map((d) => d.jobsPerSecond) };
}

/**
 * Pre-enqueue `jobs` (not timed), then start the workers and time until the database holds
 * no pending job. Handler calls tell when to start asking the database, so the drain itself
 * is not slowed by polling a count every few ms. The workers keep running afterwards.
 */
export async function drain(q: QueueUnderTest, sink: Sink, jobs: BenchJob[], capMs: number): Promise<DrainResult> {
  await q.enqueue(jobs);
  await q.analyze();
  let started = 0;
  sink.onJob = () => void started++;
  const t0 = performance.now();
  const deadline = t0 + capMs;
  await q.startWorkers((t) => sink.onJob(t));
  let left = jobs.length;
  while (performance.now() < deadline) {
    if (started >= jobs.length) {
      left = await q.remaining();
      if (left === 0) break;
      await sleep(5);
    } else {
      await sleep(20);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  if (left !== 0) left = await q.remaining();
  const completed = jobs.length - left;
  return { jobs: jobs.length, completed, seconds, jobsPerSecond: completed / seconds, capped: left > 0 };
}

export interface LatencyResult {
  enqueued: number;
  pickedUp: number;
  /** Achieved enqueue rate (jobs/s): below the target when the enqueue itself is slow. */
  rate: number;
  medianMs: number;
  p99Ms: number;
  /** Some jobs were never picked up before the wait ran out: the figures are lower bounds. */
  lowerBound: boolean;
}

/**
 * Enqueue `rate` jobs/s for `seconds` to the running, idle workers: every 10 ms one statement of rate/100
 * jobs (500/s → 5 jobs per tick), each carrying its enqueue wall-clock time. A job's pickup
 * latency is handler start − enqueue time. Jobs not started `waitMs` after the last enqueue
 * count with their age at that moment, so a slow queue shows as a lower bound, not a gap.
 */
export async function latency(
  q: QueueUnderTest,
  sink: Sink,
  opts: { rate: number; seconds: number; perEntity: boolean; waitMs: number },
): Promise<LatencyResult> {
  const samples: number[] = [];
  const sent: number[] = [];
  sink.onJob = (t) => void samples.push(wallMs() - t);
  await sleep(1500); // past pgfleet's 1 s idle poll: every worker is asleep, waiting for a NOTIFY or a poll
  const perTick = Math.max(1, Math.round(opts.rate / 100));
  const ticks = Math.round((opts.seconds * 1000) / 10);
  const t0 = performance.now();
  for (let k = 0; k < ticks; k++) {
    const due = t0 + k * 10 - performance.now();
    if (due > 0) await sleep(due);
    const batch = makeJobs(perTick, opts.perEntity, k * perTick);
    for (const j of batch) sent.push(j.t);
    await q.enqueue(batch);
  }
  const rate = sent.length / ((performance.now() - t0) / 1000);
  const waitUntil = performance.now() + opts.waitMs;
  while (samples.length < sent.length && performance.now() < waitUntil) await sleep(20);
  const pickedUp = samples.length;
  const all = [...samples];
  if (pickedUp < sent.length) {
    // Which ones were missed is unknown; the newest are the likeliest, so use the youngest ages.
    const now = wallMs();
    const ages = sent.map((t) => now - t).sort((a, b) => a - b);
    all.push(...ages.slice(0, sent.length - pickedUp));
  }
  all.sort((a, b) => a - b);
  return {
    enqueued: sent.length,
    pickedUp,
    rate,
    medianMs: percentile(all, 50),
    p99Ms: percentile(all, 99),
    lowerBound: pickedUp < sent.length,
  };
}
