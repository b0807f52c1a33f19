/**
 * Provisioning benchmark: through the Heroku add-on API, the time from POST
 * /heroku/resources to a URL that answers `select 1`, for plan `shared` (answered 200 with
 * the config) and plan `dedicated` (answered 202; the config arrives later as a PATCH to the
 * platform), over repeated sequential runs, against web + worker + clock in this process, a
 * fake platform, and an ephemeral control Postgres.
 *
 *   npm run bench:provision
 *   BENCH_PROVISION_SHARED=5 BENCH_PROVISION_DEDICATED=2 BENCH_PROVISION_BURST=20 npm run bench:provision   # a quick run
 *
 * Then a burst: BENCH_PROVISION_BURST shared provisions POSTed at once (bench/provision/burst.ts).
 * Exits 1 when any provision failed for good.
 *
 * Writes bench/results/provision.json and bench/results/provision.md, and prints the markdown.
 */
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runProcesses } from '../src/processes/app.ts';
import { createLogger } from '../src/log.ts';
import { firstSelect, patchedUrl, provisionBody, RETRY_MS, field, transitionsSince, web, type Context } from './provision/client.ts';
import { wallMs } from './provision/platform.ts';
import { runBurst } from './provision/burst.ts';
import {
  burstSummary as summarizeBurst,
  markdown,
  milestoneStats,
  ms,
  num,
  stats,
  type DedicatedRun,
  type Results,
  type SharedRun,
} from './provision/report.ts';
import { verifyFull } from '../test/support/tls.ts';
import {
  BASIC,
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

const params = {
  sharedRuns: envInt('BENCH_PROVISION_SHARED', 30, 1),
  dedicatedRuns: envInt('BENCH_PROVISION_DEDICATED', 8, 1),
  /** PGFLEET_ANSWER_WITHIN: how long a shared provision may wait to answer 200 with the config. */
  answerWithinSeconds: 20,
  retryMs: RETRY_MS,
  sharedTimeoutSeconds: 60,
  dedicatedTimeoutSeconds: 120,
  /** Shared provisions POSTed at once after the sequential runs. */
  burst: envInt('BENCH_PROVISION_BURST', 200, 1),
  /** Each provision of the burst: POST → `select 1` answered, or it failed. */
  burstTimeoutSeconds: 180,
};

const AIMS = { shared: 300, dedicated: 3000 };

async function waitForState(ctx: Context, route: string, state: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await call(web(ctx), 'GET', route, `Bearer ${OPERATOR_TOKEN}`);
    if (field(res.json, 'state') === state) return;
    if (Date.now() > deadline)
      throw new Error(`${route} still ${JSON.stringify(field(res.json, 'state'))} after ${timeoutMs / 1000} s, not ${state}`);
    await sleep(50);
  }
}

/** DELETE the resource and wait (untimed) until it, and any dedicated server of it, is gone. */
async function deprovision(ctx: Context, id: string): Promise<void> {
  const shown = await call(web(ctx), 'GET', `/api/resources/${id}`, `Bearer ${OPERATOR_TOKEN}`);
  const servers = field(shown.json, 'servers');
  const serverIds = Array.isArray(servers) ? servers.map((s) => field(s, 'id')).filter((s): s is string => typeof s === 'string') : [];
  const res = await call(web(ctx), 'DELETE', `/heroku/resources/${id}`, BASIC);
  if (res.status !== 204) throw new Error(`DELETE /heroku/resources/${id} answered ${res.status}: ${JSON.stringify(res.json)}`);
  await waitForState(ctx, `/api/resources/${id}`, 'deleted', 60_000);
  if (field(shown.json, 'plan') === 'dedicated') {
    for (const serverId of serverIds) await waitForState(ctx, `/api/servers/${serverId}`, 'deleted', 60_000);
  }
}

async function sharedRun(ctx: Context): Promise<SharedRun> {
  const body = provisionBody(ctx.platform, 'shared');
  const t0 = wallMs();
  try {
    const res = await call(web(ctx), 'POST', '/heroku/resources', BASIC, body);
    const url = field(res.json, 'config', 'PGFLEET_URL');
    if (res.status !== 200 || typeof url !== 'string') throw new Error(`POST answered ${res.status}: ${JSON.stringify(res.json)}`);
    const ok = await firstSelect(verifyFull(url, ctx.caFile), t0 + params.sharedTimeoutSeconds * 1000);
    const milestones = [
      ...(await transitionsSince(ctx, body.uuid, t0)),
      { name: 'http:200 answered', ms: res.at - t0 },
      { name: 'client:select 1 answered', ms: ok.at - t0 },
    ].sort((a, b) => a.ms - b.ms);
    return { id: body.uuid, totalMs: ok.at - t0, httpMs: res.at - t0, attempts: ok.attempts, milestones };
  } catch (err) {
    return { id: body.uuid, totalMs: NaN, httpMs: NaN, attempts: 0, milestones: [], error: message(err) };
  }
}

async function dedicatedRun(ctx: Context): Promise<DedicatedRun> {
  const body = provisionBody(ctx.platform, 'dedicated');
  const deadline = params.dedicatedTimeoutSeconds * 1000;
  const t0 = wallMs();
  try {
    const patched = ctx.platform.waitFor('PATCH', `/addons/${body.uuid}/config`, deadline);
    patched.catch(() => undefined);
    const res = await call(web(ctx), 'POST', '/heroku/resources', BASIC, body);
    if (res.status !== 202) throw new Error(`POST answered ${res.status}: ${JSON.stringify(res.json)}`);
    const patch = await patched;
    const ok = await firstSelect(verifyFull(patchedUrl(patch.body), ctx.caFile), t0 + deadline);
    const provisioned = await ctx.platform.waitFor('POST', `/addons/${body.uuid}/actions/provision`, deadline);
    const token = ctx.platform.calls.find(
      (c) => c.path === '/oauth/token' && new URLSearchParams(c.body).get('code') === body.oauth_grant.code,
    );
    const milestones = [
      ...(await transitionsSince(ctx, body.uuid, t0)),
      { name: 'http:202 answered', ms: res.at - t0 },
      ...(token ? [{ name: 'platform:grant exchanged', ms: token.at - t0 }] : []),
      { name: 'platform:PATCH config', ms: patch.at - t0 },
      { name: 'platform:actions/provision', ms: provisioned.at - t0 },
      { name: 'client:select 1 answered', ms: ok.at - t0 },
    ].sort((a, b) => a.ms - b.ms);
    return {
      id: body.uuid,
      totalMs: ok.at - t0,
      httpMs: res.at - t0,
      tokenMs: token ? token.at - t0 : NaN,
      patchMs: patch.at - t0,
      provisionedMs: provisioned.at - t0,
      attempts: ok.attempts,
      milestones,
    };
  } catch (err) {
    return {
      id: body.uuid,
      totalMs: NaN,
      httpMs: NaN,
      tokenMs: NaN,
      patchMs: NaN,
      provisionedMs: NaN,
      attempts: 0,
      milestones: [],
      error: message(err),
    };
  }
}

// ---------------------------------------------------------------------------------------
// Numbers and the report.

const NOTES = [
  'One process runs web + worker + clock (runProcesses, as `pgfleet start` does) against an ephemeral control Postgres 15; ' +
    'tenant servers are local Postgres clusters under a fresh PGFLEET_HOME. The platform is a local HTTP stand-in that answers at once.',
  't0 is taken just before the POST; the end is when a fresh node-postgres connection (new Client each try, ' +
    `retried every ${params.retryMs} ms) has answered \`select 1\` through the URL — for shared the one in the 200 answer, ` +
    'for dedicated the one in the PATCH the platform received.',
  'Runs are sequential. The first shared provision is a warm-up reported alone: it opens the shared server (initdb + start). ' +
    'Each later shared resource is deprovisioned after it is measured (untimed, waited for until deleted), ' +
    'so every shared run places a tenant on a server holding only the warm-up tenant.',
  'Each dedicated resource is deprovisioned after it is measured, and the bench waits (untimed) until the resource and its server are ' +
    'deleted, so runs do not overlap and no servers pile up.',
  `The burst comes last: ${params.burst} shared provisions POSTed at once (Promise.all of fetches, each its own uuid), ` +
    'onto the shared server the warm-up opened and whatever servers placement opens meanwhile; ' +
    `a 202 is followed to the platform's config PATCH. Each must reach \`select 1\` within ${params.burstTimeoutSeconds} s. ` +
    'Burst resources are not deprovisioned.',
  "Milestone times from the transitions table are the database's now(): the start of the transaction that committed the transition, " +
    'on the same host clock as the bench.',
  `p90 is interpolated between closest ranks; with ${params.dedicatedRuns} dedicated runs it sits between the two slowest. ` +
    `Aims (issue): shared under ${AIMS.shared} ms, dedicated under ${num(AIMS.dedicated)} ms, judged by the median.`,
  'Measured on 2 CPUs shared with other work (a test suite may run at the same time): expect noise between runs.',
];

// ---------------------------------------------------------------------------------------

async function main({ controlUrl, platform, config, started }: BenchSystem): Promise<boolean> {
  const loadAverageAtStart = os.loadavg();
  // Taken now: the working tree may change while the bench runs.
  const commit = gitCommit();
  const postgres = await postgresVersion(controlUrl);
  const running = await runProcesses(config, createLogger(config.logLevel), ['web', 'worker', 'clock']);
  started(running);
  const caFile = path.join(config.home, 'pgfleet-ca.pem');
  await writeFile(caFile, running.caCertificate);
  const ctx: Context = { running, platform, caFile };

  console.error('warm-up: first shared provision…');
  const firstShared = await sharedRun(ctx);
  if (firstShared.error) throw new Error(`the first shared provision failed: ${firstShared.error}`);
  console.error(`  ${ms(firstShared.totalMs)} ms`);

  const shared: SharedRun[] = [];
  for (let i = 0; i < params.sharedRuns; i++) {
    const run = await sharedRun(ctx);
    shared.push(run);
    console.error(`shared ${i + 1}/${params.sharedRuns}: ${run.error ?? `${ms(run.totalMs)} ms (answer ${ms(run.httpMs)} ms)`}`);
    await deprovision(ctx, run.id).catch((err: unknown) => console.error(`  deprovision failed: ${message(err)}`));
  }

  const dedicated: DedicatedRun[] = [];
  for (let i = 0; i < params.dedicatedRuns; i++) {
    const run = await dedicatedRun(ctx);
    dedicated.push(run);
    console.error(`dedicated ${i + 1}/${params.dedicatedRuns}: ${run.error ?? `${ms(run.totalMs)} ms (PATCH at ${ms(run.patchMs)} ms)`}`);
    await deprovision(ctx, run.id).catch((err: unknown) => console.error(`  deprovision failed: ${message(err)}`));
  }

  console.error(`burst: ${params.burst} shared provisions at once…`);
  const burst = await runBurst(ctx, params.burst, params.burstTimeoutSeconds);
  const burstSummary = summarizeBurst(burst);
  console.error(
    `  200 × ${burstSummary.answered200}, 202 × ${burstSummary.answered202}, failed ${burstSummary.failed}; ` +
      `${ms(burst.wallMs)} ms until the last was ready`,
  );

  const ok = <T extends { error?: string }>(runs: T[]) => runs.filter((r) => !r.error);
  const results: Results = {
    machine: {
      ...hostInfo(),
      postgres,
      commit,
      loadAverageAtStart,
      loadAverageAtEnd: os.loadavg(),
    },
    parameters: {
      ...params,
      observeIntervalSeconds: config.observeInterval,
      workerConcurrency: config.concurrency,
    },
    aimsMs: AIMS,
    notes: NOTES,
    summary: {
      firstShared: stats([firstShared.totalMs]),
      shared: {
        total: stats(ok(shared).map((r) => r.totalMs)),
        http: stats(ok(shared).map((r) => r.httpMs)),
        afterAnswer: stats(ok(shared).map((r) => r.totalMs - r.httpMs)),
        attempts: stats(ok(shared).map((r) => r.attempts)),
        failed: shared.length - ok(shared).length,
      },
      dedicated: {
        total: stats(ok(dedicated).map((r) => r.totalMs)),
        http: stats(ok(dedicated).map((r) => r.httpMs)),
        token: stats(ok(dedicated).map((r) => r.tokenMs)),
        patch: stats(ok(dedicated).map((r) => r.patchMs)),
        provisioned: stats(ok(dedicated).map((r) => r.provisionedMs)),
        afterPatch: stats(ok(dedicated).map((r) => r.totalMs - r.patchMs)),
        attempts: stats(ok(dedicated).map((r) => r.attempts)),
        failed: dedicated.length - ok(dedicated).length,
      },
      sharedMilestones: milestoneStats(shared),
      dedicatedMilestones: milestoneStats(dedicated),
      burst: burstSummary,
    },
    firstShared,
    shared,
    dedicated,
    burst,
  };
  await writeResults('provision', results, markdown(results));
  return [...shared, ...dedicated, ...burst.runs].every((r) => !r.error);
}

await runBench({
  env: { PGFLEET_ANSWER_WITHIN: String(params.answerWithinSeconds) },
  watchdogMinutes: 30,
  main,
});
