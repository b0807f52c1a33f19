import { setTimeout as sleep } from 'node:timers/promises';
import { createPool } from '../../src/db.ts';
import { pgfleet } from './contenders.ts';
import { makeJobs } from './measure.ts';

/** 10k jobs per enqueueMany call, as the lead asked; one statement, one NOTIFY. */
const BATCH = 10_000;
/**
 * The producer adds a batch whenever 10k or fewer jobs are pending (so at most 20k, 20 per
 * entity: the drain's shape), and no further: the soak measures a queue that stays busy, not
 * one that first grows by a million rows.
 */
const MAX_BACKLOG = 20_000;
/** Throughput is reported per window of 50k started jobs. */
export const WINDOW = 50_000;

export interface SoakWindow {
  upTo: number;
  seconds: number;
  jobsPerSecond: number;
  tableBytes: number;
  /** pg_stat_user_tables for jobs when the window closed (the statistics lag by up to ~0.5 s). */
  deadTuples: number;
  autovacuums: number;
}

export interface SoakResult {
  jobs: number;
  completed: number;
  seconds: number;
  capped: boolean;
  settings: string;
  windows: SoakWindow[];
  firstWindowJobsPerSecond: number;
  lastWindowJobsPerSecond: number;
  lastOverFirst: number;
  /** The first window can be the slow one; last/peak shows decay too. */
  peakWindowJobsPerSecond: number;
  lastOverPeak: number;
  tableBytes: { start: number; middle: number; end: number; max: number };
  autovacuums: number;
  deadTuplesAtEnd: number;
}

/**
 * Push `total` no-op jobs through our queue, per-entity on, with one Worker of the given
 * concurrency, while a producer keeps enqueueing.
 */
export async function soak(url: string, total: number, concurrency: number, capMs: number): Promise<SoakResult> {
  const setting = pgfleet('soak', true, concurrency, Math.min(concurrency + 5, 20));
  const q = await setting.open(url);
  const stats = createPool(url, 1);
  const sample = async () => {
    const { rows } = await stats.query<{ bytes: string; dead: number; autovacuums: number }>(
      `select pg_total_relation_size('jobs')::text as bytes, n_dead_tup::int as dead, autovacuum_count::int as autovacuums
       from pg_stat_user_tables where relname = 'jobs'`,
    );
    return { bytes: Number(rows[0]?.bytes ?? NaN), dead: rows[0]?.dead ?? NaN, autovacuums: rows[0]?.autovacuums ?? NaN };
  };
  let enqueued = 0;
  let started = 0;
  const marks: number[] = [];
  const t0 = performance.now();
  const deadline = t0 + capMs;
  try {
    await q.reset();
    const produce = async () => {
      while (enqueued < total && performance.now() < deadline) {
        if (enqueued - started > MAX_BACKLOG - BATCH) {
          await sleep(20);
          continue;
        }
        const n = Math.min(BATCH, total - enqueued);
        await q.enqueue(makeJobs(n, true, enqueued));
        enqueued += n;
      }
    };
    await q.enqueue(makeJobs(BATCH, true));
    enqueued = BATCH;
    // Fresh statistics, as the drains get: the table's last ANALYZE may describe another
    // shape (the drain before had no entity ids).
    await q.analyze();
    const startBytes = (await sample()).bytes;
    await q.startWorkers(() => {
      if (++started % WINDOW === 0) marks.push(performance.now());
    });
    const producing = produce();
    const windows: SoakWindow[] = [];
    const sizes: number[] = [startBytes];
    let left = total;
    while (performance.now() < deadline) {
      while (windows.length < marks.length) {
        const i = windows.length;
        const seconds = (marks[i]! - (i === 0 ? t0 : marks[i - 1]!)) / 1000;
        const { bytes, dead, autovacuums } = await sample();
        sizes.push(bytes);
        windows.push({
          upTo: (i + 1) * WINDOW,
          seconds,
          jobsPerSecond: WINDOW / seconds,
          tableBytes: bytes,
          deadTuples: dead,
          autovacuums,
        });
        console.error(
          `soak: ${(i + 1) * WINDOW} started, ${Math.round(WINDOW / seconds)} jobs/s, jobs table ${(bytes / 2 ** 20).toFixed(1)} MiB, ` +
            `${dead} dead, ${autovacuums} autovacuums`,
        );
      }
      if (started >= total && (left = await q.remaining()) === 0) break;
      await sleep(started >= total ? 5 : 50);
    }
    const seconds = (performance.now() - t0) / 1000;
    await producing;
    await q.stopWorkers();
    left = await q.remaining();
    const end = await sample();
    const first = windows[0]?.jobsPerSecond ?? NaN;
    const last = windows.at(-1)?.jobsPerSecond ?? NaN;
    const peak = Math.max(...windows.map((w) => w.jobsPerSecond));
    return {
      jobs: total,
      completed: enqueued - left,
      seconds,
      capped: left > 0 || enqueued < total,
      settings: `${setting.knobs}; producer: ${BATCH / 1000}k jobs per enqueueMany whenever ≤ ${(MAX_BACKLOG - BATCH) / 1000}k are pending`,
      windows,
      firstWindowJobsPerSecond: first,
      lastWindowJobsPerSecond: last,
      lastOverFirst: last / first,
      peakWindowJobsPerSecond: peak,
      lastOverPeak: last / peak,
      tableBytes: {
        start: startBytes,
        middle: windows[Math.max(0, Math.ceil(windows.length / 2) - 1)]?.tableBytes ?? NaN,
        end: end.bytes,
        max: Math.max(...sizes, end.bytes),
      },
      autovacuums: end.autovacuums,
      deadTuplesAtEnd: end.dead,
    };
  } finally {
    await q.stopWorkers();
    await q.close();
    await stats.end();
  }
}
