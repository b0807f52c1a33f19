/**
 * PGMonkey, ours: `npm run chaos` starts the Procfile layout as separate processes (web, two
 * workers, clock, router) against an ephemeral control Postgres, provisions `ha` databases
 * through the add-on API, each under a writer (numbered rows through its URL, verify-full)
 * and a read-only reader, and makes seeded random faults one at a time (src/chaos/run.ts).
 *
 *   npm run chaos                                        # 100 faults of every kind
 *   CHAOS_FAULTS=10 CHAOS_SEED=7 npm run chaos           # or: npm run chaos -- --faults 10 --seed 7
 *   CHAOS_KINDS=primary-crash,web-killed npm run chaos   # only these kinds
 *   CHAOS_WHOLE_BOUND_S=60 CHAOS_DATABASES=2 CHAOS_LOGS=/tmp/chaos-logs npm run chaos
 *
 * Writes bench/results/chaos.json and chaos.md, and the table into bench/README.md between
 * its chaos markers. Exits 1 on any acknowledged row lost, split brain or database stuck.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FAULT_KINDS } from '../src/chaos/faults.ts';
import { chaosSettings } from '../src/chaos/options.ts';
import { Frozen } from '../src/chaos/processes.ts';
import { CHAOS_RESULTS_PAGE, chaosMarkdown, withChaosResults } from '../src/chaos/report.ts';
import { runChaos } from '../src/chaos/run.ts';
import { ChaosSystem } from './chaos/system.ts';
import { envInt, gitCommit, hostInfo, writeResults } from './support.ts';

const RESULTS_PAGE = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', CHAOS_RESULTS_PAGE);

const settings = chaosSettings(process.argv.slice(2), process.env, FAULT_KINDS);
const log = (line: string) => console.error(line);
const commit = gitCommit();
const loadAverageAtStart = os.loadavg();
const system = new ChaosSystem({
  databases: envInt('CHAOS_DATABASES', 2, 1),
  workers: 2,
  ...(process.env.CHAOS_LOGS ? { logDir: process.env.CHAOS_LOGS } : {}),
  log,
});
const frozen = new Frozen();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`chaos: ${signal}, stopping everything`);
    frozen.thaw();
    void system.stop().finally(() => process.exit(130));
  });
}

log(
  `chaos: ${settings.faults} faults, seed ${settings.seed} (CHAOS_SEED=${settings.seed} makes this run again), ` +
    `kinds ${settings.kinds.join(', ')}`,
);
// A run that hangs still ends, and stops what it started: each fault is bounded, plus start-up.
const watchdog = setTimeout(
  () => {
    log('chaos: the run took too long, stopping everything');
    frozen.thaw();
    void system.stop().finally(() => process.exit(2));
  },
  (10 * 60 + settings.faults * (4 * settings.wholeBoundS + 30)) * 1000,
);
let code = 1;
try {
  await system.start();
  const result = await runChaos(system.deployment!, system.databases, { ...settings, log, frozen });
  const context = [
    `Commit ${commit}; ${hostInfo().nproc} cores; load ${loadAverageAtStart.map((l) => l.toFixed(1)).join(' ')} at the start, ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')} at the end.`,
  ];
  await writeResults(
    'chaos',
    { machine: { ...hostInfo(), commit, loadAverageAtStart, loadAverageAtEnd: os.loadavg() }, ...result },
    chaosMarkdown(result, context),
  );
  await fs.writeFile(RESULTS_PAGE, withChaosResults(await fs.readFile(RESULTS_PAGE, 'utf8'), chaosMarkdown(result, context, false)));
  code = result.failures.length === 0 ? 0 : 1;
} catch (err) {
  log(`chaos: ${(err as Error).stack ?? String(err)}`);
} finally {
  clearTimeout(watchdog);
  await system.stop();
}
process.exit(code);
