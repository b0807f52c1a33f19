/**
 * One run of the failover benchmark: a writer committing through the resource's URL, a fault
 * made to its primary, and what followed measured from the writer's commits, the rows'
 * timestamps and the machines' transitions.
 */
import path from 'node:path';
import { clusterPids } from '../../src/chaos/processes.ts';
import { query } from '../../src/chaos/writer.ts';
import { processRunning } from '../../src/pg/cluster.ts';
import { NumberedWriter } from '../../test/support/writer.ts';
import { wallMs } from '../provision/platform.ts';
import { message, sleep } from '../support.ts';
import { makeFault, thaw } from './faults.ts';
import type { NoteParams } from './notes.ts';
import type { FailoverRun, Fault } from './report.ts';
import { failureNotes, transitionsSince, whole, type Context } from './resource.ts';

/** The benchmark's parameters a run follows. */
export interface RunParams extends NoteParams {
  recoveryTimeoutSeconds: number;
  wholeTimeoutSeconds: number;
}

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

/** The writer of the run under way, stopped on the way out. */
let writer: NumberedWriter | undefined;

/** Stops the run under way, if any, and lets what it froze go: on the way out, whatever happens. */
export async function abandonRun(): Promise<void> {
  thaw();
  await writer?.stop();
}

/** The rows committed in a run, with when (clock_timestamp(), ms since the epoch) and on which server port. */
async function committed(url: string, table: string): Promise<{ n: number; ms: number; port: number }[]> {
  return query(url, `select n, (extract(epoch from at) * 1000)::float8 as ms, port from ${table} order by at, n`);
}

/** The resource and its two servers, each named by the role it had before the fault (as far as the run knew them). */
function entityNames(ctx: Context, result: FailoverRun): Map<string, string> {
  return new Map([
    [ctx.resourceId, 'resource'],
    ...(result.primaryBefore ? [[result.primaryBefore, 'old primary'] as const] : []),
    ...(result.standbyBefore ? [[result.standbyBefore, 'old standby'] as const] : []),
  ]);
}

/** One run: the writer started, `fault` made to the primary, and what followed measured until the resource is whole again. */
export async function failoverRun(ctx: Context, params: RunParams, run: number, fault: Fault): Promise<FailoverRun> {
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
    const signalled = await makeFault(fault, pids, dataDir);
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
    result.notes = await failureNotes(ctx, entityNames(ctx, result));
  } finally {
    await writer?.stop();
    writer = undefined;
    thaw();
  }
  if (Number.isFinite(faultAt)) {
    result.milestones = [
      ...(await transitionsSince(ctx, entityNames(ctx, result), faultAt).catch(() => [])),
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
