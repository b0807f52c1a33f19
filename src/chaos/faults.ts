import { showResource, type Deployment, type Whole } from './deployment.ts';
import { processRunning } from '../pg/cluster.ts';
import { runningJobs } from '../queue/status.ts';
import { entityNotes } from './entityNotes.ts';
import { clusterPids, Frozen, serverDataDir, signalAll, walsenderPids } from './processes.ts';
import { sleep, wallMs, type ChaosWriter } from './writer.ts';

/** Faults of Postgres, which need only the API, the control database and the local servers. */
export const POSTGRES_FAULTS = ['primary-crash', 'primary-freeze', 'standby-crash', 'walsender-stall', 'double-failover'] as const;
/** Faults of pgfleet's own processes and its control database, which need the processes run by the tool. */
export const PROCESS_FAULTS = ['worker-mid-failover', 'clock-killed', 'web-killed', 'router-killed', 'control-restart'] as const;
export const FAULT_KINDS = [...POSTGRES_FAULTS, ...PROCESS_FAULTS] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** Kinds whose whole point is a failover: the time to the first commit on the new primary is theirs. */
export const FAILOVER_FAULTS: ReadonlySet<FaultKind> = new Set([
  'primary-crash',
  'primary-freeze',
  'worker-mid-failover',
  'double-failover',
]);

export function parseKinds(raw: string | undefined, available: readonly FaultKind[]): FaultKind[] {
  if (raw === undefined || raw.trim() === '') return [...available];
  const kinds = raw
    .split(',')
    .map((k) => k.trim())
    .filter(Boolean);
  const unknown = kinds.filter((k) => !(FAULT_KINDS as readonly string[]).includes(k));
  if (unknown.length) throw new Error(`unknown fault kind ${unknown.join(', ')}: use some of ${FAULT_KINDS.join(', ')}`);
  const unreachable = kinds.filter((k) => !(available as readonly string[]).includes(k));
  if (unreachable.length)
    throw new Error(
      `fault kind ${unreachable.join(', ')} needs pgfleet's processes run by the tool (npm run chaos): here only ${available.join(', ')}`,
    );
  return [...new Set(kinds)] as FaultKind[];
}

/**
 * How long a walsender is held stopped: well past the few seconds a stall should take to be
 * noticed (the write gap shows whether it was), and short enough that whole again, counted
 * from the fault, can stay under 10 s.
 */
export const WALSENDER_STALL_MS = 8000;
/** The longest a frozen primary stays frozen if no fence comes. */
export const FREEZE_BOUND_MS = 30_000;
/**
 * Back-to-back failovers: the new primary is killed this long after the first failover's
 * first commit, drawn from the seed: early, it dies while the old primary is still being
 * rewound or rebuilt; late, after it is back as the standby.
 */
export const SECOND_KILL_AFTER_MS = { min: 500, max: 5000 };

export interface FaultContext {
  dep: Deployment;
  resourceId: string;
  writer: ChaosWriter;
  before: Whole;
  frozen: Frozen;
  /** Wall ms by which the fault must have let go of what it holds. */
  deadline: number;
  /** The run's seeded generator, for what a fault draws. */
  random: () => number;
}

/** Make the fault; resolves once the fault has done its part (a stall or a freeze let go). Returns notes. */
export async function inject(kind: FaultKind, ctx: FaultContext): Promise<string[]> {
  const { dep, before } = ctx;
  const primaryDir = serverDataDir(dep.home, before.primary.id);
  switch (kind) {
    case 'primary-crash':
      return kill(primaryDir, 'the primary');
    case 'standby-crash':
      return kill(serverDataDir(dep.home, before.standby.id), 'the standby');
    case 'primary-freeze': {
      const pids = await clusterPids(primaryDir);
      if (pids.length === 0) return ['the primary was not running'];
      ctx.frozen.freeze(pids);
      // Children the postmaster forked while the first were being stopped.
      ctx.frozen.freeze((await clusterPids(primaryDir)).filter((pid) => !ctx.frozen.has(pid)));
      // Let go once the old primary is fenced (its processes killed) or another server is the primary.
      const until = Math.min(ctx.deadline, wallMs() + FREEZE_BOUND_MS);
      let note = `thawed after ${FREEZE_BOUND_MS / 1000} s with no failover`;
      while (wallMs() < until) {
        const shown = await showResource(dep, ctx.resourceId).catch(() => undefined);
        const primary = shown?.servers.find((s) => s.role === 'primary');
        if ((primary && primary.id !== before.primary.id) || !(await processRunning(pids[0]!))) {
          note = '';
          break;
        }
        await sleep(100);
      }
      // Not fenced in time: what pgfleet was doing about it, for whoever reads why.
      const seen = note ? await entityNotes(dep.pool, before.primary.id, 'the frozen primary') : [];
      ctx.frozen.thaw();
      return note ? [note, ...seen] : [];
    }
    case 'walsender-stall': {
      const pids = await walsenderPids(primaryDir);
      if (pids.length === 0) return ['no walsender on the primary'];
      ctx.frozen.freeze(pids);
      await sleep(Math.min(WALSENDER_STALL_MS, Math.max(0, ctx.deadline - wallMs())));
      ctx.frozen.thaw();
      return [];
    }
    case 'double-failover': {
      const notes = await kill(primaryDir, 'the primary');
      const faultAt = wallMs();
      // The second kill waits for the first failover to take writes.
      for (;;) {
        if (wallMs() > ctx.deadline) return [...notes, 'the first failover took no write within the bound: no second kill'];
        if ((await ctx.writer.firstElsewhere(faultAt, before.primary.port!).catch(() => undefined)) !== undefined) break;
        await sleep(50);
      }
      const after = Math.round(SECOND_KILL_AFTER_MS.min + ctx.random() * (SECOND_KILL_AFTER_MS.max - SECOND_KILL_AFTER_MS.min));
      await sleep(after);
      const shown = await showResource(dep, ctx.resourceId);
      const primary = shown.servers.find((s) => s.role === 'primary');
      if (!primary || primary.id === before.primary.id) return [...notes, 'no new primary in the API to kill'];
      const killed = await kill(serverDataDir(dep.home, primary.id), `the new primary ${primary.id.slice(0, 8)}`);
      return [
        ...notes,
        ...(killed.length ? killed : [`the new primary ${primary.id.slice(0, 8)} killed ${after} ms after its first commit`]),
      ];
    }
    case 'worker-mid-failover': {
      const notes = await kill(primaryDir, 'the primary');
      return [...notes, ...(await killFailoverWorker(ctx))];
    }
    case 'clock-killed':
    case 'web-killed':
    case 'router-killed':
      await processes(dep).killAndRestart(kind.replace('-killed', '') as 'clock' | 'web' | 'router');
      return [];
    case 'control-restart':
      await processes(dep).restartControl();
      return [];
  }
}

function processes(dep: Deployment) {
  if (!dep.processes) throw new Error("this fault needs pgfleet's processes run by the tool");
  return dep.processes;
}

/** SIGKILL of a server's postmaster; a note when there was none to kill. */
async function kill(dataDir: string, what: string): Promise<string[]> {
  const [postmaster] = await clusterPids(dataDir);
  if (postmaster === undefined) return [`${what} was not running: nothing killed`];
  signalAll([postmaster], 'SIGKILL');
  return [];
}

/**
 * The worker holding a step of the failover (the old primary's fence, the resource's fence or
 * promotion), found by the jobs table's `locked_by` (`<dyno>#<hex>`, src/queue/worker.ts),
 * killed while it holds it, and another started under its name.
 */
async function killFailoverWorker(ctx: FaultContext): Promise<string[]> {
  const dep = ctx.dep;
  const until = Math.min(ctx.deadline, wallMs() + 15_000);
  while (wallMs() < until) {
    const held = await failoverStepHeld(dep, ctx.resourceId).catch(() => undefined);
    if (held) {
      const dyno = held.lockedBy.split('#')[0]!;
      if (await processes(dep).killWorker(dyno)) return [`killed ${dyno} holding ${held.task}`];
      return [`${held.task} is held by ${held.lockedBy}, not a worker of this run`];
    }
    await sleep(5);
  }
  return ['no worker was seen holding a failover step: none killed'];
}

/** A running step of the resource's failover (its own, or one of its servers'), and the worker holding it. */
async function failoverStepHeld(dep: Deployment, resourceId: string): Promise<{ task: string; lockedBy: string } | undefined> {
  const { rows } = await dep.pool.query<{ id: string }>('select server_id as id from resource_servers where resource_id = $1', [
    resourceId,
  ]);
  const held = await runningJobs(dep.pool, ['fence', 'fence_primary', 'promote'], [resourceId, ...rows.map((r) => r.id)]);
  return held[0];
}
