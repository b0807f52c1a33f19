import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, type Pool } from '../../src/db.ts';
import { createLogger } from '../../src/log.ts';
import { migrate } from '../../src/migrate.ts';
import { startEphemeralPostgres, type EphemeralPostgres } from '../../src/pg/ephemeral.ts';
import { enqueue, enqueueUnlessQueued, type TaskMap } from '../../src/queue/jobs.ts';
import { Worker, type AnyJobHandler } from '../../src/queue/worker.ts';
import { waitFor } from '../support/db.ts';
import { TEST_KEY, TOKEN } from '../support/system.ts';

/**
 * The control database restarts (an upgrade, a failover of its own, a crash): every
 * process must ride it out, and the queue must go on as before, soon after (issue 11:
 * workers crashed on "Connection terminated unexpectedly", and a job whose end could not
 * be recorded stayed locked until its lease ran out).
 */
const log = createLogger('silent');
let control: EphemeralPostgres;
let pool: Pool;
const dataDir = () => path.join(control.dir, 'data');

beforeAll(async () => {
  control = await startEphemeralPostgres();
  pool = createPool(control.url, 10);
  await migrate(pool);
});

afterAll(async () => {
  await pool?.end();
  await control?.stop();
});

/** Stop the control database (`fast`: sessions are ended; `immediate`: a crash), wait, start it again. */
async function restart(mode: 'fast' | 'immediate', downMs: number, whileDown: () => void = () => undefined): Promise<number> {
  await control.cluster.stop(dataDir(), mode);
  whileDown();
  await new Promise((r) => setTimeout(r, downMs));
  await control.cluster.start(dataDir());
  return Date.now();
}

function gate(): { wait: Promise<void>; open: () => void } {
  let open: () => void = () => undefined;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

const runningJobs = async () =>
  (await pool.query<{ task: string; locked_by: string }>('select task, locked_by from jobs where locked_by is not null')).rows;

describe('a restart of the control database', () => {
  it('leaves a worker running: what ended meanwhile is recorded, and new jobs wake it by NOTIFY again', async () => {
    await pool.query('delete from jobs');
    const slow = gate();
    const ran: string[] = [];
    const handlers: Record<string, AnyJobHandler> = {
      slow: () => slow.wait.then(() => void ran.push('slow')),
      quick: async () => void ran.push('quick'),
    };
    // A poll of a minute: only a NOTIFY, heard on a LISTEN connection made again, wakes it in time.
    const worker = new Worker<TaskMap>(pool, { queues: undefined, concurrency: 4, leaseSeconds: 30, handlers, log, pollMs: 60_000 });
    await worker.start();
    try {
      await enqueue<TaskMap>(pool, { task: 'slow' });
      await waitFor('the slow job to start', async () => (await runningJobs()).length === 1);
      // It ends while the database is down: its completion cannot be recorded then.
      const upAt = await restart('fast', 1500, () => slow.open());
      await waitFor("the slow job's end to be recorded", async () => (await pool.query('select 1 from jobs')).rowCount === 0, 5_000);
      process.stdout.write(`ended job recorded ${Date.now() - upAt} ms after the control database came back\n`);
      await new Promise((r) => setTimeout(r, 1500));
      const enqueuedAt = Date.now();
      await enqueue<TaskMap>(pool, { task: 'quick' });
      await waitFor('a new job to run', async () => ran.includes('quick'), 5_000);
      process.stdout.write(`new job ran ${Date.now() - enqueuedAt} ms after it was enqueued\n`);
      expect(ran).toEqual(['slow', 'quick']);
    } finally {
      slow.open();
      await worker.stop();
    }
  });

  it('does not take a running job from its live worker, though the database was down longer than the lease', async () => {
    await pool.query('delete from jobs');
    const long = gate();
    let runs = 0;
    const handlers: Record<string, AnyJobHandler> = { long: () => ((runs += 1), long.wait) };
    const holder = new Worker<TaskMap>(pool, { queues: undefined, concurrency: 2, leaseSeconds: 3, handlers, log, pollMs: 200 });
    // Another worker sweeps for jobs whose worker stopped, as often as it can.
    const sweeper = new Worker<TaskMap>(pool, { queues: undefined, concurrency: 2, leaseSeconds: 0.5, handlers, log, pollMs: 200 });
    await holder.start();
    await sweeper.start();
    try {
      await enqueue<TaskMap>(pool, { task: 'long' });
      await waitFor('the job to start', async () => runs === 1);
      const [claim] = await runningJobs();
      await restart('immediate', 4000);
      await new Promise((r) => setTimeout(r, 2500));
      expect(await runningJobs()).toEqual([claim]);
      long.open();
      await waitFor('the job to finish', async () => (await pool.query('select 1 from jobs')).rowCount === 0, 10_000);
      expect(runs).toBe(1);
    } finally {
      long.open();
      await Promise.all([holder.stop(), sweeper.stop()]);
    }
  });

  it('leaves web, worker, clock and router running as processes: they reconnect and go on', async () => {
    await pool.query('delete from jobs');
    const home = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-home-'));
    await fs.chmod(home, 0o755);
    const child = spawn(process.execPath, ['bin/pgfleet.js', 'start'], {
      env: {
        ...process.env,
        DATABASE_URL: control.url,
        PGFLEET_HOME: home,
        PORT: '0',
        OPERATOR_TOKEN: TOKEN,
        PGFLEET_ENCRYPTION_KEY: TEST_KEY,
        LOG_LEVEL: 'warn',
        LOG_FORMAT: 'logfmt',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    let exited: number | null | undefined;
    child.once('exit', (code) => (exited = code));
    try {
      const url = await waitFor('pgfleet to listen', async () => /listening on (http:\/\/\S+)/.exec(out)?.[1], 60_000);
      await restart('immediate', 2000);
      await new Promise((r) => setTimeout(r, 3000));
      expect(exited).toBeUndefined();
      await enqueueUnlessQueued(pool, 'prune_archives', 'default', [{}]);
      await waitFor('the worker to run a new job', async () => (await pool.query('select 1 from jobs')).rowCount === 0, 10_000).catch(
        async (err: Error) => {
          // What was left, and what pgfleet said: one failure under a full run left no trace.
          const { rows } = await pool.query(
            `select task, lane, locked_by, locked_until::text, run_at::text, dead_at::text, last_error from jobs`,
          );
          throw new Error(`${err.message}; jobs: ${JSON.stringify(rows)}; pgfleet said: ${out.slice(-3000)}`);
        },
      );
      const res = await waitFor(
        'the web process to answer',
        async () => {
          const r = await fetch(`${url}/api/servers`, { headers: { authorization: `Bearer ${TOKEN}` } }).catch(() => undefined);
          return r?.status === 200 ? r : undefined;
        },
        10_000,
      );
      expect(await res.json()).toEqual([]);
      expect(exited).toBeUndefined();
      expect(out).not.toMatch(/Unhandled|uncaught/i);
    } finally {
      if (exited === undefined) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
      await fs.rm(home, { recursive: true, force: true });
    }
  });
});
