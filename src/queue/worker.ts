import { randomBytes } from 'node:crypto';
import type { Histogram } from 'prom-client';
import type { Client, Pool, Queryable } from '../db.ts';
import { isConnectionLoss, transaction } from '../db.ts';
import { backoff } from '../backoff.ts';
import { Notifications, RECONNECT_MS } from '../listen.ts';
import type { Logger } from '../log.ts';
import {
  claimJobs,
  completeJobs,
  extendLeases,
  failJob,
  nextDueInMs,
  presenceName,
  releaseLostClaims,
  releasePredecessorClaims,
} from './claim.ts';
import type { Tasks } from '../tasks.ts';
import { PRIORITY, type AnyJob, type Job, type TaskMap, type TaskName } from './jobs.ts';

export interface JobContext {
  log: Logger;
  pool: Pool;
}

/**
 * A handler does the job's work. When its outcome must be recorded together with the job's
 * completion (a machine event, say), it returns `commit`, which runs inside the transaction
 * that deletes the job: if this worker lost its lease, neither happens.
 */
export type JobHandler<T extends string = TaskName, M extends TaskMap = Tasks> = (
  job: Job<T, M>,
  ctx: JobContext,
) => Promise<void | { commit: (client: Client) => Promise<void> }>;

/** A handler of any task, as the queue itself and its tests see one. */
export type AnyJobHandler = JobHandler<string, TaskMap>;

/**
 * A worker's table of handlers: one for every task of `M`, each given its own task's jobs.
 * pgfleet's is checked against every task in src/tasks.ts, so a task with no handler does
 * not compile (test/types/contract.ts).
 */
export type TaskHandlers<M extends TaskMap = Tasks> = { [T in TaskName<M>]: JobHandler<T, M> };

/**
 * What the rest of the system hears of jobs: each run, inside the job's commit when it has
 * one, and each unexpected error (a thrown one; expected failures are machine events).
 */
export interface Journal {
  ran(db: Queryable, job: AnyJob, outcome: string, ms: number, error?: string): Promise<void>;
  raised(pool: Pool, job: AnyJob, error: string): Promise<void>;
}

export interface WorkerOptions<M extends TaskMap = Tasks> {
  journal?: Journal;
  /** Observes every job's duration, by queue, task and outcome. */
  jobDuration?: Histogram<'queue' | 'task' | 'outcome'>;
  queues: string[] | undefined;
  concurrency: number;
  /** Slots beyond `concurrency` that only urgent jobs take; urgentSlotsFor(concurrency) unless given. */
  urgentSlots?: number;
  leaseSeconds: number;
  handlers: TaskHandlers<M>;
  log: Logger;
  /** Longest sleep when idle; a NOTIFY from an enqueue cuts it short. */
  pollMs?: number;
  /**
   * Which worker this is across restarts (PGFLEET_WORKER_NAME, Heroku's DYNO): started, it
   * releases what the last worker of this name still held. Unset: a name of its own, which
   * succeeds no one.
   */
  name?: string;
  /** How often it releases the jobs of workers that stopped; SWEEP_MS unless given. */
  sweepMs?: number;
}

/**
 * Every worker looks for lost claims this often. A killed worker's session ends at once,
 * so its jobs run again within about this (the chaos target: a worker killed holding a
 * failover's `promote` may delay it by less than 2 s). One indexed read of the running
 * jobs and of pg_stat_activity: nothing beside a claim's cost.
 */
export const SWEEP_MS = 500;

// A lost connection for LISTEN and presence is made again after 100 ms, doubling up to a
// second (src/listen.ts RECONNECT_MS): well inside RESTART_GRACE_SECONDS, in which claims
// are not judged by presence.

/**
 * How long the end of a job is retried when the control database does not answer: a
 * restart takes seconds (1.5 s here, fast shutdown and start), a managed database's
 * failover up to a minute. Past that, the lease releases the job.
 */
const RECORD_RETRY_MS = 60_000;

class LeaseLost extends Error {}

/**
 * Slots a worker keeps for urgent jobs beyond its concurrency: a quarter of it, at least one.
 * A routine observation of a server that does not answer takes the probe's timeout (1 s),
 * and ten of them fill a worker of 10 for that long: however it ranks, a failover step
 * would wait for a slot. 2 more for 10 let two databases fail over side by side (a failover
 * runs one step at a time). They come on top of the concurrency rather than out of it, so
 * other jobs keep all 10 and the queue's throughput stays what it was (bench:queue drained
 * 6,592 jobs/s against 6,707 before priorities). No dedicated failover queue: it would need a
 * worker of its own, and a failover's steps are observations and ticks as much as fences and
 * promotions, the same tasks as routine work in the same per-entity queues. With priorities
 * and these slots in the one queue, 30 other servers change a failover's medians by +37 ms
 * (crash) and -306 ms (hang), where they added 176 and 451 ms before (bench:failover).
 */
export function urgentSlotsFor(concurrency: number): number {
  return Math.max(1, Math.floor(concurrency / 4));
}

export class Worker<M extends TaskMap = Tasks> {
  readonly id: string;
  private readonly running = new Map<string, AnyJob>();
  /** Jobs whose end is being recorded: a heartbeat that misses one is not news. */
  private readonly finishing = new Set<string>();
  /** Jobs a heartbeat found released: whatever they return is not committed. */
  private readonly lost = new Set<string>();
  private readonly toComplete: string[] = [];
  private completing: Promise<void> | undefined;
  private stopped = true;
  private wakeSleeper: ((woken: boolean) => void) | undefined;
  /** A wake-up that came while the loop was claiming: the next sleep returns at once. */
  private woken = false;
  /** Whether an urgent job may have become claimable since the last claim. */
  private urgentMayWait = true;
  /** The LISTEN connection, which is also this worker's presence session. */
  private presence: Notifications | undefined;
  private loop: Promise<void> | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private drained: (() => void) | undefined;

  constructor(
    private readonly pool: Pool,
    // Not inferred from the handlers: pgfleet's worker is checked against every task unless told otherwise.
    private readonly opts: WorkerOptions<NoInfer<M>>,
  ) {
    this.id = `${opts.name ?? `pid${process.pid}`}#${randomBytes(4).toString('hex')}`;
    // Postgres cuts application_name at 63 bytes: a cut name would match no claim.
    if (Buffer.byteLength(presenceName(this.id)) > 63) throw new Error(`worker name "${opts.name}" is too long`);
  }

  async start(): Promise<void> {
    this.stopped = false;
    // Present before the first claim: a claim without a session would be released at once.
    // While the connection is open, this worker's claims are its own (src/queue/claim.ts presenceName).
    this.presence = new Notifications(this.pool, {
      channels: ['pgfleet_jobs'],
      applicationName: presenceName(this.id),
      purpose: 'jobs; claiming by polling until it is back',
      log: this.opts.log,
      onNotify: () => this.wake(),
      onConnected: () => this.wake(),
    });
    await this.presence.start();
    if (this.opts.name !== undefined) {
      const { released, namesakes } = await releasePredecessorClaims(this.pool, this.opts.name, this.id, this.opts.leaseSeconds);
      if (released > 0) this.opts.log.warn({ released, name: this.opts.name }, 'released the jobs the last worker of this name held');
      if (namesakes > 0)
        this.opts.log.warn(
          { name: this.opts.name },
          'another worker is connected under this name: give each worker its own PGFLEET_WORKER_NAME',
        );
    }
    this.scheduleHeartbeat(this.heartbeatMs());
    this.sweeper = setInterval(() => void this.sweep(), this.opts.sweepMs ?? SWEEP_MS);
    this.loop = this.run();
  }

  /** Stop claiming, let running jobs finish, flush completions. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.wake();
    await this.loop;
    // Heartbeats go on until the last job ends, so a slow job keeps its lease while we stop.
    if (this.running.size > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    clearInterval(this.sweeper);
    await this.flush();
    await this.presence?.stop();
  }

  private async run(): Promise<void> {
    const pollMs = this.opts.pollMs ?? 1000;
    // A claim that fails (the control database restarts) is tried again within a second,
    // whatever the poll: nothing may wake a worker whose LISTEN connection is lost.
    const retryMs = Math.min(pollMs, 1000);
    const { concurrency } = this.opts;
    const kept = this.opts.urgentSlots ?? urgentSlotsFor(concurrency);
    while (!this.stopped) {
      const free = concurrency + kept - this.running.size;
      const room = concurrency - this.notUrgentRunning();
      // With the slots of other jobs full, only urgent ones are claimed, and only once one
      // may have come: an enqueue's NOTIFY, a job that ended, or a sleep that ran out.
      const urgentOnly = room <= 0;
      let claimed = 0;
      if (free > 0 && (!urgentOnly || this.urgentMayWait)) {
        this.urgentMayWait = false;
        try {
          const jobs = await claimJobs(this.pool, {
            workerId: this.id,
            queues: this.opts.queues,
            limit: urgentOnly ? free : Math.min(free, room),
            minPriority: urgentOnly ? PRIORITY.urgent : PRIORITY.routine,
            leaseSeconds: this.opts.leaseSeconds,
            present: this.presence?.connected ?? false,
          });
          claimed = jobs.length;
          for (const job of jobs) this.execute(job);
        } catch (err) {
          // 23505: another worker won the race for an entity; the next claim finds the rest.
          if ((err as { code?: string }).code !== '23505') {
            this.opts.log.error({ err }, 'claiming jobs failed');
            await this.sleep(retryMs);
          }
          continue;
        }
      }
      if (this.stopped) break;
      const roomLeft = this.running.size < concurrency + kept && concurrency - this.notUrgentRunning() > 0;
      if (claimed > 0 && roomLeft) continue;
      // Nothing to claim: until something comes or ends, or the next delayed job falls due.
      // Slots just filled: until a job ends (one does soon), or a poll, whichever is first;
      // the delayed-job query is spared there, since it was one more per claim of a busy worker.
      // Without a LISTEN connection nothing wakes it: poll within a second meanwhile.
      const poll = this.presence?.connected ? pollMs : retryMs;
      const woken = await this.sleep(claimed === 0 ? await this.idleMs(poll) : poll);
      if (!woken) this.urgentMayWait = true;
    }
  }

  private notUrgentRunning(): number {
    let n = 0;
    for (const job of this.running.values()) if (job.priority < PRIORITY.urgent) n++;
    return n;
  }

  /**
   * How long to sleep with nothing to claim: until the next delayed job falls due (a server's
   * re-probe half a second away, say) when that is sooner than the poll. Enqueued jobs that
   * are due at once wake the worker by NOTIFY.
   */
  private async idleMs(pollMs: number): Promise<number> {
    const next = await nextDueInMs(this.pool, this.opts.queues).catch(() => undefined);
    return next === undefined ? pollMs : Math.min(pollMs, Math.max(Math.ceil(next), 5));
  }

  private wake(): void {
    this.urgentMayWait = true;
    if (this.wakeSleeper) this.wakeSleeper(true);
    else this.woken = true;
  }

  /** True when woken, false when the time ran out. */
  private sleep(ms: number): Promise<boolean> {
    if (this.woken) {
      this.woken = false;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const done = (woken: boolean) => {
        clearTimeout(timer);
        this.wakeSleeper = undefined;
        resolve(woken);
      };
      const timer = setTimeout(() => done(false), ms);
      this.wakeSleeper = done;
    });
  }

  private execute(job: AnyJob): void {
    this.running.set(job.id, job);
    const log = this.opts.log.child({ job: job.id, task: job.task, entity: job.entityId ?? undefined, attempt: job.attempts });
    const started = performance.now();
    void this.perform(job, log)
      .then((outcome) => {
        const ms = performance.now() - started;
        this.opts.jobDuration?.observe({ queue: job.queue, task: job.task, outcome: outcome.replace(/^failed:/, '') }, ms / 1000);
        log.debug({ ms: Math.round(ms), outcome }, 'job finished');
      })
      .finally(() => {
        this.running.delete(job.id);
        this.finishing.delete(job.id);
        this.lost.delete(job.id);
        if (this.running.size === 0) this.drained?.();
        this.wake();
      });
  }

  private async perform(job: AnyJob, log: Logger): Promise<string> {
    // A claimed row is what an enqueue typed by the same task map wrote: its task's handler takes it.
    const handlers: Partial<Record<string, unknown>> = this.opts.handlers;
    const handler = handlers[job.task] as AnyJobHandler | undefined;
    const started = performance.now();
    const ms = () => Math.round(performance.now() - started);
    try {
      if (!handler) throw new Error(`no handler for task "${job.task}"`);
      const result = await handler(job, { log, pool: this.pool });
      this.finishing.add(job.id);
      if (this.lost.has(job.id)) throw new LeaseLost();
      if (result) {
        await transaction(this.pool, async (client) => {
          if ((await completeJobs(client, this.id, [job.id])) === 0) throw new LeaseLost();
          await result.commit(client);
          await this.opts.journal?.ran(client, job, 'done', ms());
        });
      } else {
        await this.record(log, () => this.complete(job.id));
      }
      return 'done';
    } catch (err) {
      if (err instanceof LeaseLost) {
        log.warn('lease lost before the job finished; another worker runs it again');
        return 'lease-lost';
      }
      this.finishing.add(job.id);
      const message = err instanceof Error ? err.message : String(err);
      // A commit whose connection was lost may have happened: then there is nothing to fail.
      const outcome = await this.record(log, () => failJob(this.pool, this.id, job, message)).catch((e: unknown) => {
        log.error({ err: e }, 'recording the failure failed; the lease will release the job');
        return 'unrecorded';
      });
      log[outcome === 'dead' ? 'error' : 'warn']({ err, outcome }, 'job failed');
      if (this.opts.journal) {
        const journal = this.opts.journal;
        // A lost connection (the control database or a server restarting) is retried, not raised.
        const raised = isConnectionLoss(err) ? Promise.resolve() : journal.raised(this.pool, job, message);
        await raised
          .then(() => journal.ran(this.pool, job, outcome, ms(), message))
          .catch((e: unknown) => log.error({ err: e }, 'recording the failure in the journal failed'));
      }
      return `failed:${outcome}`;
    }
  }

  /**
   * Record a job's end, again and again while the control database does not answer (it is
   * restarting): the job stays this worker's meanwhile, its lease renewed by the heartbeat,
   * rather than locked and idle until the lease runs out.
   */
  private async record<T>(log: Logger, fn: () => Promise<T>): Promise<T> {
    const until = Date.now() + RECORD_RETRY_MS;
    for (let retry = 0; ; retry++) {
      try {
        return await fn();
      } catch (err) {
        const wait = backoff(RECONNECT_MS, retry);
        if (Date.now() + wait > until) throw err;
        if (retry === 0) log.warn({ err }, 'recording the end of the job failed; trying again until the control database answers');
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  /**
   * Completions of plain jobs are batched: jobs finishing together are deleted by one
   * statement, which is most of the queue's throughput on no-op jobs.
   */
  private complete(id: string): Promise<void> {
    this.toComplete.push(id);
    this.completing ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.flush());
    return this.completing;
  }

  private async flush(): Promise<void> {
    this.completing = undefined;
    const ids = this.toComplete.splice(0);
    if (ids.length > 0) await completeJobs(this.pool, this.id, ids);
  }

  private heartbeatMs(): number {
    return Math.max(250, (this.opts.leaseSeconds * 1000) / 3);
  }

  private scheduleHeartbeat(ms: number): void {
    this.heartbeatTimer = setTimeout(() => void this.heartbeat(), ms);
  }

  /**
   * Renew the leases of running jobs every third of a lease. One that fails (the control
   * database restarts) is tried again every half second, not a third of a lease later, so
   * the leases outlive the restart. A job found released is told: it will not commit.
   */
  private async heartbeat(): Promise<void> {
    const ids = [...this.running.keys()];
    let next = this.heartbeatMs();
    try {
      const held = new Set(await extendLeases(this.pool, this.id, ids, this.opts.leaseSeconds));
      for (const id of ids) {
        if (held.has(id) || !this.running.has(id) || this.finishing.has(id) || this.lost.has(id)) continue;
        this.lost.add(id);
        this.opts.log.warn(
          { job: id, task: this.running.get(id)!.task },
          'lease lost: the job was released while it ran, and will not commit',
        );
      }
    } catch (err) {
      this.opts.log.warn({ err }, 'extending leases failed; trying again');
      next = Math.min(next, SWEEP_MS);
    }
    if (this.heartbeatTimer !== undefined) this.scheduleHeartbeat(next);
  }

  private async sweep(): Promise<void> {
    const n = await releaseLostClaims(this.pool).catch(() => 0);
    if (n > 0) this.opts.log.warn({ released: n }, 'released jobs whose worker stopped');
  }
}
