/**
 * Failover benchmark: a writer commits numbered rows through an `ha` resource's URL (the
 * router's) while its primary is crashed (SIGKILL of the postmaster) or hung (SIGSTOP of
 * the postmaster and every child), crash and hang runs alternating. Per run: the time from
 * the fault to the first commit acknowledged after it, the acknowledged rows missing
 * afterwards, and the time until the resource is whole again (the old primary back as its
 * synchronous standby). Against web + worker + clock + router in this process, a fake
 * platform, and an ephemeral control Postgres.
 *
 *   npm run bench:failover
 *   BENCH_FAILOVER_RUNS=2 npm run bench:failover   # a quick run: 2 crashes and 2 hangs per fleet size
 *   BENCH_FAILOVER_FLEET=30 npm run bench:failover # only with 30 other servers
 *
 * BENCH_FAILOVER_FLEET lists the sizes of the fleet around the measured resource (default
 * 0,30): for each, in ascending order, the bench first provisions dedicated resources (each
 * a server of its own, observed by the same worker and clock) until that many others
 * exist, then makes its runs. Failover work must not queue behind the routine observation
 * of other servers: the figures should not grow with the fleet.
 *
 * Writes bench/results/failover.json and bench/results/failover.md, and prints the
 * markdown. Exits 1 when an acknowledged row went missing or a run failed.
 */
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runProcesses, type Running } from '../src/processes/app.ts';
import type { Config } from '../src/config.ts';
import { createLogger } from '../src/log.ts';
import { asSuperuser } from '../src/pg/superuser.ts';
import { loadServerRecord } from '../src/servers/rows.ts';
import { verifyFull } from '../test/support/tls.ts';
import { clusterPids, signalAll } from '../src/chaos/processes.ts';
import { query } from '../src/chaos/writer.ts';
import { processRunning } from '../src/pg/cluster.ts';
import { NumberedWriter } from '../test/support/writer.ts';
import { fleetObservations, growFleet, provision } from './failover/fleet.ts';
import { notes, settings } from './failover/notes.ts';
import { markdown, summarize, type FailoverRun, type Fault, type FleetResult, type Results } from './failover/report.ts';
import { wallMs } from './provision/platform.ts';
import { ms, type Milestone } from './provision/report.ts';
import {
  call,
  envInt,
  gitCommit,
  hostInfo,
  message,
  OPERATOR_TOKEN,
  postgresVersion,
  runBench,
  sleep,
  writeResults,
  type BenchSystem,
} from './support.ts';

/** The fleet sizes to measure at, ascending and without repeats. */
function fleetSizes(raw: string | undefined): number[] {
  const sizes = (raw ?? '0,30').split(',').map((part) => {
    const n = Number(part.trim());
    if (part.trim() === '' || !Number.isInteger(n) || n < 0)
      throw new Error(`BENCH_FAILOVER_FLEET must list whole numbers ≥ 0 (e.g. 0,30), got "${raw}"`);
    return n;
  });
  return [...new Set(sizes)].sort((a, b) => a - b);
}

const fleets = fleetSizes(process.env.BENCH_FAILOVER_FLEET);

const params = {
  /** Runs of each fault at each fleet size; crash and hang alternate. */
  runs: envInt('BENCH_FAILOVER_RUNS', 10, 1),
  /** The most other servers provisioned. */
  fleetMax: fleets.at(-1)!,
  /** Commits acknowledged before the fault is made. */
  ackedBeforeFault: 50,
  /** How long the writer goes on once its commits land on the promoted standby. */
  writeAfterRecoveryMs: 1000,
  /** The writer's bounded waits (NumberedWriter's defaults), as a production client's are. */
  writerConnectTimeoutMs: 2000,
  writerQueryTimeoutMs: 3000,
  provisionTimeoutSeconds: 180,
  recoveryTimeoutSeconds: 60,
  wholeTimeoutSeconds: 180,
};

const AIMS: Record<Fault, number> = { crash: 1000, hang: 5000 };

/** Poll `check` until it gives a value; on timeout, fail with what it last said. */
async function until<T>(what: string, check: () => Promise<T | string>, timeoutMs: number, everyMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await check().catch((err: unknown) => `error: ${message(err)}`);
    if (typeof result !== 'string') return result;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s (last seen: ${result})`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------------------------------
// Talking to pgfleet and to the database it hands out.

interface Shown {
  id: string;
  role: string;
  state: string;
  port: number | null;
}

interface Context {
  running: Running;
  config: Config;
  resourceId: string;
  url: string;
}

/**
 * Whether the resource is whole: available, its primary and standby both available, the
 * standby synchronous on the primary, and the URL reaching the primary. The pair when it
 * is, else what is missing.
 */
async function whole(ctx: Context): Promise<{ primary: Shown; standby: Shown } | string> {
  const res = await call(ctx.running.url!, 'GET', `/api/resources/${ctx.resourceId}`, `Bearer ${OPERATOR_TOKEN}`);
  const shown = res.json as { state: string; servers: Shown[] };
  const roles = shown.servers.map((s) => `${s.role} ${s.id.slice(0, 8)} ${s.state}`).join(', ');
  const primary = shown.servers.find((s) => s.role === 'primary');
  const standby = shown.servers.find((s) => s.role === 'standby');
  if (shown.state !== 'available' || primary?.state !== 'available' || standby?.state !== 'available')
    return `resource ${shown.state}; ${roles}`;
  const server = await loadServerRecord(ctx.running.pool, ctx.running.sealer, primary.id);
  if (!server?.host || !server.port) return `the primary ${primary.id} has no address`;
  const sync = await asSuperuser(
    { host: server.host, port: server.port, password: server.superuserPassword },
    'postgres',
    async (client) =>
      (await client.query<{ name: string }>(`select application_name as name from pg_stat_replication where sync_state = 'sync'`)).rows.map(
        (r) => r.name,
      ),
    2000,
  );
  if (!sync.includes(standby.id.replace(/-/g, '_')))
    return `the standby ${standby.id.slice(0, 8)} is not synchronous (sync: ${sync.join(', ') || 'none'})`;
  const [at] = await query<{ port: number; recovery: boolean }>(
    ctx.url,
    'select inet_server_port() as port, pg_is_in_recovery() as recovery',
  );
  if (at?.port !== primary.port || at.recovery)
    return `the URL reaches port ${at?.port} (recovery ${at?.recovery}), not the primary's ${primary.port}`;
  return { primary, standby };
}

/**
 * Transitions of the resource and of its two servers since the fault, in ms after it, each
 * server named by the role it had before the fault.
 */
async function transitionsSince(ctx: Context, names: Map<string, string>, faultAt: number): Promise<Milestone[]> {
  const { rows } = await ctx.running.pool.query<{ entity: string; to: string; ms: number }>(
    `select t.entity_id as entity, t.to_state as "to", (extract(epoch from t.at) * 1000)::float8 as ms
     from transitions t
     where t.entity_id = any($1::uuid[]) and t.at >= to_timestamp($2::float8 / 1000)
     order by t.at, t.id`,
    [[...names.keys()], faultAt],
  );
  return rows.map((r) => ({ name: `${names.get(r.entity)}:${r.to}`, ms: r.ms - faultAt }));
}

// ---------------------------------------------------------------------------------------
// Runs.

/** Processes this bench froze and has not let go yet: continued on the way out, whatever happens. */
const frozen = new Set<number>();
/** The writer of the run under way, stopped on the way out. */
let writer: NumberedWriter | undefined;

function thaw(): void {
  signalAll([...frozen], 'SIGCONT');
  frozen.clear();
}

/** The rows committed in a run, with when (clock_timestamp(), ms since the epoch) and on which server port. */
async function committed(url: string, table: string): Promise<{ n: number; ms: number; port: number }[]> {
  return query(url, `select n, (extract(epoch from at) * 1000)::float8 as ms, port from ${table} order by at, n`);
}

async function failoverRun(ctx: Context, run: number, fault: Fault): Promise<FailoverRun> {
  const result: FailoverRun = {
    run,
    fault,
    table: `failover_${run}`,
    primaryBefore: '',
    standbyBefore: '',
    primaryAfter: undefined,
    signalled: 0,
    frozenLeft: undefined,
    ackedBeforeFault: 0,
    acked: 0,
    recoveryMs: NaN,
    newPrimaryMs: NaN,
    oldPrimaryCommitsAfterFault: 0,
    lastOnOldPrimaryMs: NaN,
    pauseMs: NaN,
    wholeMs: NaN,
    missing: [],
    missingOnRejoined: [],
    milestones: [],
  };
  let faultAt = NaN;
  try {
    const before = await until('the resource to be whole', () => whole(ctx), params.wholeTimeoutSeconds * 1000, 100);
    result.primaryBefore = before.primary.id;
    result.standbyBefore = before.standby.id;
    // The writer inserts n alone; the defaults say when and on which server each row was written.
    await query(
      ctx.url,
      `create table ${result.table}
         (n int primary key, at timestamptz not null default clock_timestamp(), port int not null default inet_server_port())`,
    );
    const w = new NumberedWriter(ctx.url, result.table, { connectMs: params.writerConnectTimeoutMs, queryMs: params.writerQueryTimeoutMs });
    writer = w;
    w.start();
    await until(
      'commits before the fault',
      async () => (w.acknowledged.length >= params.ackedBeforeFault ? true : `${w.acknowledged.length} acknowledged`),
      30_000,
      5,
    );

    const dataDir = path.join(ctx.config.home, 'servers', before.primary.id, 'data');
    const pids = await clusterPids(dataDir);
    result.ackedBeforeFault = w.acknowledged.length;
    w.fault();
    faultAt = performance.timeOrigin + w.faultAt;
    let signalled: number[];
    if (fault === 'crash') {
      signalled = pids.slice(0, 1);
      signalAll(signalled, 'SIGKILL');
    } else {
      // The postmaster (first) and every child at once; then any child it forked since they were listed.
      for (const pid of pids) frozen.add(pid);
      signalAll(pids, 'SIGSTOP');
      const late = (await clusterPids(dataDir)).filter((pid) => !frozen.has(pid));
      for (const pid of late) frozen.add(pid);
      signalAll(late, 'SIGSTOP');
      signalled = [...pids, ...late];
    }
    result.signalled = signalled.length;

    await until(
      'a commit after the fault',
      async () => w.recoveryMs ?? `${w.acknowledged.length} acknowledged`,
      params.recoveryTimeoutSeconds * 1000,
      10,
    );
    result.recoveryMs = w.recoveryMs!;
    // That commit may have been one under way at the fault, or one an orphaned backend of the
    // old primary took: wait until the writer's commits land on another server.
    await until(
      'commits on the promoted standby',
      async () => {
        const [here] = await query<{ port: number; rows: number }>(
          ctx.url,
          `select inet_server_port() as port, (select count(*) from ${result.table} where port = inet_server_port())::int as rows`,
        );
        return here && here.port !== before.primary.port && here.rows > 0
          ? true
          : `the URL reaches port ${here?.port} with ${here?.rows} rows written there`;
      },
      params.recoveryTimeoutSeconds * 1000,
      20,
    );
    await sleep(params.writeAfterRecoveryMs);
    await w.stop();
    result.acked = w.acknowledged.length;
    if (fault === 'hang') result.frozenLeft = (await Promise.all(signalled.map(processRunning))).filter(Boolean).length;
    result.missing = await w.missing();

    const rows = await committed(ctx.url, result.table);
    const onOld = rows.filter((r) => r.port === before.primary.port);
    const lastOnOld = onOld.at(-1);
    const firstOnNew = rows.find((r) => r.port !== before.primary.port);
    result.oldPrimaryCommitsAfterFault = onOld.filter((r) => r.ms > faultAt).length;
    result.lastOnOldPrimaryMs = lastOnOld ? lastOnOld.ms - faultAt : NaN;
    result.newPrimaryMs = firstOnNew ? firstOnNew.ms - faultAt : NaN;
    result.pauseMs = firstOnNew && lastOnOld ? firstOnNew.ms - lastOnOld.ms : NaN;

    const after = await until(
      'the old primary to rejoin as the synchronous standby',
      async () => {
        const now = await whole(ctx);
        if (typeof now === 'string' || now.standby.id === before.primary.id) return now;
        return `the standby is ${now.standby.id.slice(0, 8)}, not the old primary`;
      },
      params.wholeTimeoutSeconds * 1000,
      100,
    );
    result.wholeMs = wallMs() - faultAt;
    result.primaryAfter = after.primary.id;
    // The standby may still be replaying the last commits it flushed: give it a moment.
    const rejoinedUrl = Object.assign(new URL(ctx.url), { port: String(after.standby.port) }).toString();
    result.missingOnRejoined = await w.missing(rejoinedUrl);
    for (let tries = 0; result.missingOnRejoined.length > 0 && tries < 50; tries++) {
      await sleep(100);
      result.missingOnRejoined = await w.missing(rejoinedUrl);
    }
  } catch (err) {
    result.error = message(err);
  } finally {
    await writer?.stop();
    writer = undefined;
    thaw();
  }
  if (Number.isFinite(faultAt)) {
    const names = new Map([
      [ctx.resourceId, 'resource'],
      ...(result.primaryBefore ? [[result.primaryBefore, 'old primary'] as const] : []),
      ...(result.standbyBefore ? [[result.standbyBefore, 'old standby'] as const] : []),
    ]);
    result.milestones = [
      ...(await transitionsSince(ctx, names, faultAt).catch(() => [])),
      { name: 'writer:first acknowledged commit', ms: result.recoveryMs },
      { name: 'table:last commit on the old primary', ms: result.lastOnOldPrimaryMs },
      { name: 'table:first commit on the promoted standby', ms: result.newPrimaryMs },
      { name: 'bench:whole again', ms: result.wholeMs },
    ]
      .filter((m) => Number.isFinite(m.ms))
      .sort((a, b) => a.ms - b.ms);
  }
  return result;
}

// ---------------------------------------------------------------------------------------

async function main({ controlUrl, platform, config, started }: BenchSystem): Promise<boolean> {
  const loadAverageAtStart = os.loadavg();
  // Taken now: the working tree may change while the bench runs.
  const commit = gitCommit();
  const running = await runProcesses(config, createLogger(config.logLevel), ['web', 'worker', 'clock', 'router']);
  started(running);

  console.error('provisioning an ha resource…');
  const provisioned = await provision(running, platform, 'ha', params.provisionTimeoutSeconds * 1000);
  // The writer checks the server's certificate, as a customer with verify-full does.
  const caFile = path.join(config.home, 'pgfleet-ca.pem');
  await writeFile(caFile, running.caCertificate);
  const ctx: Context = { running, config, resourceId: provisioned.id, url: verifyFull(provisioned.url, caFile) };

  const results: FleetResult[] = [];
  const fleet: string[] = [];
  let number = 0;
  let failed = false;
  for (const size of fleets) {
    let provisionMs = 0;
    if (size > fleet.length) {
      console.error(`provisioning ${size - fleet.length} dedicated resources, for a fleet of ${size}…`);
      const started = wallMs();
      fleet.push(...(await growFleet(running, platform, size - fleet.length, params.provisionTimeoutSeconds * 1000)));
      provisionMs = wallMs() - started;
    }
    const from = wallMs();
    const runs: FailoverRun[] = [];
    const total = params.runs * 2;
    for (let i = 0; i < total && !failed; i++) {
      const fault: Fault = i % 2 === 0 ? 'crash' : 'hang';
      const run = await failoverRun(ctx, ++number, fault);
      runs.push(run);
      console.error(
        `fleet ${size}, run ${i + 1}/${total} ${fault}: ${
          run.error
            ? `failed: ${run.error}`
            : `writes on the promoted standby after ${ms(run.newPrimaryMs)} ms ` +
              `(first acknowledged commit ${ms(run.recoveryMs)} ms), whole again ${ms(run.wholeMs)} ms`
        }; ${run.missing.length} of ${run.acked} acknowledged rows missing`,
      );
      if (run.error) {
        console.error('stopping: the resource may not be whole for the next run');
        failed = true;
      }
    }
    const observed = await fleetObservations(running, fleet, from, wallMs());
    results.push({
      size,
      servers: observed.servers,
      observationsPerServerPerMinute: observed.perServerPerMinute,
      provisionMs,
      summary: {
        crash: summarize(runs.filter((r) => r.fault === 'crash')),
        hang: summarize(runs.filter((r) => r.fault === 'hang')),
      },
      runs,
    });
    if (failed) break;
  }

  const report: Results = {
    machine: {
      ...hostInfo(),
      postgres: await postgresVersion(controlUrl),
      tenantPostgres: await postgresVersion(ctx.url),
      commit,
      loadAverageAtStart,
      loadAverageAtEnd: os.loadavg(),
    },
    settings: settings(config),
    parameters: params,
    aimsMs: AIMS,
    notes: notes(config, params, AIMS),
    fleets: results,
  };
  await writeResults('failover', report, markdown(report));
  return (
    results.length === fleets.length &&
    results.every(
      (f) =>
        f.runs.length === params.runs * 2 && f.runs.every((r) => !r.error && r.missing.length === 0 && r.missingOnRejoined.length === 0),
    )
  );
}

await runBench({
  // pgfleet's defaults unless given: the settings in the results say which were used.
  env: Object.fromEntries(
    ['PGFLEET_OBSERVE_INTERVAL', 'PGFLEET_HANG_PROBES', 'PGFLEET_PROBE_TIMEOUT_MS'].flatMap((k) =>
      process.env[k] ? [[k, process.env[k]!]] : [],
    ),
  ),
  // A minute per 10 servers of the fleet (provisioning one takes about 2 s here).
  watchdogMinutes: 10 + Math.ceil(params.fleetMax / 10) + 4 * params.runs * 2 * fleets.length,
  main,
  // Frozen processes first: nothing stops a server whose processes cannot run.
  async beforeCleanUp() {
    thaw();
    await writer?.stop();
  },
});
