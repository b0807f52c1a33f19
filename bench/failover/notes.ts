/**
 * The failover benchmark's settings and notes, as written beside its figures.
 */
import { loadConfig, type Config } from '../../src/config.ts';
import { num } from '../provision/report.ts';
import type { Fault, Setting } from './report.ts';

/** The benchmark's parameters the notes quote. */
export interface NoteParams {
  ackedBeforeFault: number;
  writeAfterRecoveryMs: number;
  writerConnectTimeoutMs: number;
  writerQueryTimeoutMs: number;
}

/** The settings that shape a failover, as pgfleet ran with them, beside their defaults. */
export function settings(config: Config): Setting[] {
  const pick = (c: Config): Record<string, number | string> => ({
    PGFLEET_OBSERVE_INTERVAL: c.observeInterval,
    PGFLEET_HANG_PROBES: c.probe.hangProbes,
    PGFLEET_PROBE_TIMEOUT_MS: c.probe.timeoutMs,
    PGFLEET_JOB_LEASE: c.jobLease,
    WORKER_CONCURRENCY: c.concurrency,
    LOG_LEVEL: c.logLevel,
  });
  const defaults = pick(loadConfig({}));
  return Object.entries(pick(config)).map(([name, value]) => ({ name, value, default: defaults[name]! }));
}

export function notes(config: Config, params: NoteParams, aims: Record<Fault, number>): string[] {
  const defaults = loadConfig({}).probe;
  const probeDefaults = config.probe.hangProbes === defaults.hangProbes && config.probe.timeoutMs === defaults.timeoutMs;
  return [
    'One process runs web + worker + clock + router (runProcesses, as `pgfleet start` does) against an ephemeral control Postgres; ' +
      'tenant servers are local Postgres clusters under a fresh PGFLEET_HOME. One `ha` resource (a primary and a synchronous standby) ' +
      'serves every run; its URL points at the router, which pipes each new connection to the primary the control database names.',
    'The fleet: before the runs at each fleet size, `dedicated` resources are provisioned through the add-on API (5 at a time) until ' +
      'that many other servers exist, each a local Postgres cluster with its pooler, archiving its WAL like every server. ' +
      'The same worker and clock observe them (every PGFLEET_OBSERVE_INTERVAL seconds, with a tick each) while the runs go on; ' +
      'the table shows how often they were observed during the runs. They carry no load of their own.',
    `The writer (NumberedWriter, test/support/writer.ts) commits \`insert into failover_<run> values (n)\` through the resource URL ` +
      'one at a time, as fast as it can; a connection that fails is dropped and a new one made 20 ms later, and n is never reused. ' +
      `Its waits are bounded: ${params.writerConnectTimeoutMs} ms to connect, ${params.writerQueryTimeoutMs} ms per statement, ` +
      `so a commit a hung primary holds costs it up to ${params.writerQueryTimeoutMs} ms before it reconnects. ` +
      "The table's defaults record each row's clock_timestamp() and inet_server_port(): when, and on which server, it was written.",
    'Each run waits (untimed) until the resource is whole: available, its primary and standby available, ' +
      `the standby \`sync\` in the primary's pg_stat_replication, and the URL reaching the primary. ` +
      `Then a fresh table, ${params.ackedBeforeFault} acknowledged commits, and the fault: ` +
      "crash = SIGKILL of the primary's postmaster alone (its children are left to notice); " +
      'hang = SIGSTOP of the postmaster and every child, listed just before, then of any child forked since. ' +
      "The fault instant is the writer's fault() mark, taken just before the signal.",
    'Recovery = the fault → the first row written on the promoted standby (its clock_timestamp(); the same host clock as the bench). ' +
      "The writer's own figure, the fault → its first acknowledged commit (NumberedWriter.recoveryMs), " +
      'is reported beside it but is no recovery time: it is often the commit under way at the fault, ' +
      'which the old primary finishes (the standby already had it) before it goes. ' +
      '"Writes stopped for" = the last row written on the old primary → the first on the promoted standby.',
    `Once a row is on the promoted standby the writer goes on ${params.writeAfterRecoveryMs} ms longer, stops, ` +
      'and the acknowledged numbers not in the table are counted through the URL, ' +
      'and again on the old primary once it is back as the standby (allowing it 5 s to replay). ' +
      'Whole again = the fault → the resource whole with the old primary as its synchronous standby (polled every 100 ms, ' +
      "so up to ~100 ms late). A hung cluster's processes get SIGCONT only when the run ends, after the whole-again wait: " +
      `until then only pgfleet's fence can end them ("frozen left" counts those still there when writes stopped).`,
    "Crash and hang runs alternate so that both kinds share the machine's conditions; " +
      'the promoted standby of one run is the primary of the next. p90 is interpolated between closest ranks. ' +
      `Aims (issue): crash under ${num(aims.crash)} ms and hang under ${num(aims.hang)} ms median, no acknowledged row lost.`,
    `A hang is judged by pgfleet's probes: a server whose process lives but fails PGFLEET_HANG_PROBES=${config.probe.hangProbes} ` +
      `probes in a row, each waiting PGFLEET_PROBE_TIMEOUT_MS=${config.probe.timeoutMs} ms (re-probed every 0.5 s once one failed), ` +
      'counts as hung. ' +
      (probeDefaults
        ? "Both are pgfleet's defaults, kept so the figures are what a deployment gets; " +
          'lower values fail over sooner and risk failing over a primary that is only slow (the CPU is shared).'
        : "Set from the environment for this run (pgfleet's defaults are in the settings above).") +
      ` PGFLEET_OBSERVE_INTERVAL=${config.observeInterval} s (default 5); ` +
      'the servers of a database with a standby are observed every second regardless. ' +
      'A crash is seen at once (the router asks for an observation when a connection is refused), a hang by those probes.',
    'Measured on 2 CPUs shared with other work (a test suite may run at the same time): expect noise between runs.',
  ];
}
