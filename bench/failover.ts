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
import { runProcesses } from '../src/processes/app.ts';
import { createLogger } from '../src/log.ts';
import { verifyFull } from '../test/support/tls.ts';
import { fleetObservations, growFleet, provision } from './failover/fleet.ts';
import { notes, settings } from './failover/notes.ts';
import { markdown, summarize, type FailoverRun, type Fault, type FleetResult, type Results } from './failover/report.ts';
import type { Context } from './failover/resource.ts';
import { abandonRun, failoverRun } from './failover/run.ts';
import { wallMs } from './provision/platform.ts';
import { ms } from './provision/report.ts';
import { envInt, gitCommit, hostInfo, postgresVersion, runBench, writeResults, type BenchSystem } from './support.ts';

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
      const run = await failoverRun(ctx, params, ++number, fault);
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
        for (const note of run.notes ?? []) console.error(`  ${note}`);
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
  beforeCleanUp: abandonRun,
});
