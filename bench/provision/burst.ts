/**
 * The burst: many shared provisions POSTed at once against the running system, as a
 * platform does when many apps add the add-on together. Each is followed to a URL that
 * answers `select 1` (the config in the 200 answer, or in the platform's PATCH after a 202),
 * within a deadline; afterwards the control database says which steps failed on the way,
 * which jobs died, and which shared servers the burst opened.
 */
import { readFile } from 'node:fs/promises';
import { verifyFull } from '../../test/support/tls.ts';
import { listDeadJobs } from '../../src/queue/status.ts';
import { BASIC, call, message, sleep } from '../support.ts';
import { field, firstSelect, patchedUrl, provisionBody, transitionsSince, web, type Context } from './client.ts';
import { wallMs } from './platform.ts';
import type { Burst, BurstRun, JobTime, Milestone } from './report.ts';

async function burstRun(ctx: Context, burstT0: number, timeoutMs: number): Promise<{ run: BurstRun; t0: number }> {
  const body = provisionBody(ctx.platform, 'shared');
  const t0 = wallMs();
  const deadline = t0 + timeoutMs;
  const run: BurstRun = {
    id: body.uuid,
    postedMs: t0 - burstT0,
    status: 0,
    answerMs: NaN,
    configMs: NaN,
    readyMs: NaN,
    attempts: 0,
    milestones: [],
  };
  try {
    const res = await call(web(ctx), 'POST', '/heroku/resources', BASIC, body, AbortSignal.timeout(timeoutMs));
    run.status = res.status;
    run.answerMs = res.at - t0;
    let url: unknown;
    if (res.status === 200) {
      url = field(res.json, 'config', 'PGFLEET_URL');
      run.configMs = run.answerMs;
    } else if (res.status === 202) {
      // Already there if it came before the answer: the platform keeps every call.
      const patch = await ctx.platform.waitFor('PATCH', `/addons/${body.uuid}/config`, Math.max(deadline - wallMs(), 1));
      url = patchedUrl(patch.body);
      run.configMs = patch.at - t0;
    }
    if (typeof url !== 'string') throw new Error(`POST answered ${res.status}: ${JSON.stringify(res.json)}`);
    const ok = await firstSelect(verifyFull(url, ctx.caFile), deadline);
    run.readyMs = ok.at - t0;
    run.attempts = ok.attempts;
  } catch (err) {
    run.error = message(err);
  }
  return { run, t0 };
}

/** The run's milestones: its machines' transitions, the answer, the PATCH, the first `select 1`. */
async function milestones(ctx: Context, run: BurstRun, t0: number): Promise<Milestone[]> {
  const seen = [
    ...(await transitionsSince(ctx, run.id, t0)),
    ...(run.status ? [{ name: `http:${run.status} answered`, ms: run.answerMs }] : []),
    ...(run.status === 202 && Number.isFinite(run.configMs) ? [{ name: 'platform:PATCH config', ms: run.configMs }] : []),
    ...(Number.isFinite(run.readyMs) ? [{ name: 'client:select 1 answered', ms: run.readyMs }] : []),
  ];
  return seen.sort((a, b) => a.ms - b.ms);
}

/** Seconds and runs of each task so far, from pgfleet's job duration histogram (/metrics, open on loopback). */
async function jobTotals(ctx: Context): Promise<Map<string, { count: number; seconds: number }>> {
  const res = await fetch(`${web(ctx)}/metrics`);
  const totals = new Map<string, { count: number; seconds: number }>();
  for (const line of (await res.text()).split('\n')) {
    const m = /^pgfleet_job_duration_seconds_(sum|count)\{([^}]*)\} (\S+)$/.exec(line);
    const task = m && /task="([^"]*)"/.exec(m[2]!)?.[1];
    if (!m || !task) continue;
    const t = totals.get(task) ?? { count: 0, seconds: 0 };
    if (m[1] === 'sum') t.seconds += Number(m[3]);
    else t.count += Number(m[3]);
    totals.set(task, t);
  }
  return totals;
}

function jobTimeSince(
  before: Map<string, { count: number; seconds: number }>,
  after: Map<string, { count: number; seconds: number }>,
): JobTime[] {
  return [...after]
    .map(([task, a]) => ({ task, count: a.count - (before.get(task)?.count ?? 0), seconds: a.seconds - (before.get(task)?.seconds ?? 0) }))
    .filter((t) => t.count > 0)
    .sort((a, b) => b.seconds - a.seconds);
}

/** The machine's CPU time so far (/proc/stat, all cores, in clock ticks): busy, waiting on I/O, and all. */
async function cpuTicks(): Promise<{ busy: number; iowait: number; total: number }> {
  const [user, nice, system, idle, iowait, irq, softirq, steal] = (await readFile('/proc/stat', 'utf8'))
    .split('\n')[0]!
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number) as number[];
  const busy = user! + nice! + system! + irq! + softirq! + steal!;
  return { busy, iowait: iowait!, total: busy + idle! + iowait! };
}

async function controlTransactions(ctx: Context): Promise<number> {
  const { rows } = await ctx.running.pool.query<{ n: string }>(
    'select xact_commit + xact_rollback as n from pg_stat_database where datname = current_database()',
  );
  return Number(rows[0]!.n);
}

/** What the control database kept of the burst, since `t0` (wall ms). */
async function afterBurst(ctx: Context, t0: number): Promise<Pick<Burst, 'stepFailures' | 'deadJobs' | 'sharedServers'>> {
  const pool = ctx.running.pool;
  const since = [t0 - 5];
  const { rows: stepFailures } = await pool.query<Burst['stepFailures'][number]>(
    `select t.entity_id as entity, t.machine, t.from_state as state, (extract(epoch from t.at) * 1000)::float8 - $1 as ms,
       t.event_data->>'error' as error
     from transitions t where t.event = 'step.failed' and t.at >= to_timestamp($1::float8 / 1000) order by t.at`,
    since,
  );
  // The queue's own listing, newest first: far more than a burst's dead jobs.
  const deadJobs = (await listDeadJobs(pool, 1000))
    .filter((j) => j.deadAt.getTime() >= since[0]!)
    .reverse()
    .map((j) => ({ task: j.task, entity: j.entityId, error: j.lastError }));
  const { rows: sharedServers } = await pool.query<Burst['sharedServers'][number]>(
    `select s.id, s.created_at >= to_timestamp($1::float8 / 1000) as "openedInBurst",
       (extract(epoch from s.created_at) * 1000)::float8 - $1 as "openedMs",
       (select min(extract(epoch from t.at) * 1000)::float8 - $1 from transitions t
         where t.entity_id = s.id and t.to_state = 'available') as "availableMs",
       (select count(*)::int from resource_servers rs where rs.server_id = s.id) as tenants
     from servers s join entity_states m on m.entity_id = s.id
     where s.tenancy = 'shared' and m.finished_at is null order by s.created_at`,
    since,
  );
  return { stepFailures, deadJobs, sharedServers };
}

export async function runBurst(ctx: Context, size: number, timeoutSeconds: number): Promise<Burst> {
  const before = await jobTotals(ctx);
  const [cpu0, transactions0, process0] = [await cpuTicks(), await controlTransactions(ctx), process.cpuUsage()];
  const t0 = wallMs();
  const started = await Promise.all(Array.from({ length: size }, () => burstRun(ctx, t0, timeoutSeconds * 1000)));
  const wall = wallMs() - t0;
  const [cpu1, processCpu] = [await cpuTicks(), process.cpuUsage(process0)];
  // Statistics reach pg_stat_database within a second of a backend's transactions.
  await sleep(1500);
  const load = {
    machineBusy: (cpu1.busy - cpu0.busy) / (cpu1.total - cpu0.total),
    machineIowait: (cpu1.iowait - cpu0.iowait) / (cpu1.total - cpu0.total),
    processCpuSeconds: (processCpu.user + processCpu.system) / 1e6,
    controlTransactions: (await controlTransactions(ctx)) - transactions0,
  };
  const jobs = jobTimeSince(before, await jobTotals(ctx));
  for (const { run, t0: runT0 } of started) run.milestones = await milestones(ctx, run, runT0);
  const runs = started.map((s) => s.run);
  return { size, timeoutSeconds, wallMs: wall, load, runs, jobs, ...(await afterBurst(ctx, t0)) };
}
