import type { EscalationReason, IncidentContext, IncidentInput } from '../../machines/incident.ts';
import { isoTime, transaction, type Pool, type Queryable } from '../db.ts';
import type { Journal } from '../queue/worker.ts';
import { standbyTakesOver } from '../servers/rows.ts';
import { createMachine, sendEvent, type StepSubscriber, type StepTaken } from '../runner/runner.ts';
import { machineOf, machineState } from '../runner/store.ts';
import type { MachineName } from '../runner/machines.ts';

/** How an entity's state counts: where it should be, trouble, on the way, or going away. */
export type Health = 'healthy' | 'unhealthy' | 'neutral' | 'gone';

/**
 * Resource states that bring a database back to whole after losing a server, or in which
 * its standby stalled (it runs without a synchronous copy, or its commits wait): trouble.
 */
const RESTORING = new Set(['failover', 'rejoining', 'replacing', 'unsynchronized', 'stalled']);

export function healthOf(machine: MachineName, path: string): Health {
  const top = path.split('.')[0]!;
  if (machine === 'server') {
    if (top === 'available') return 'healthy';
    if (top === 'unreachable' || top === 'restarting' || top === 'failed') return 'unhealthy';
    if (top === 'deleting' || top === 'deleted' || top === 'fencing' || top === 'fenced') return 'gone';
    return 'neutral';
  }
  if (machine === 'resource') {
    if (top === 'available') return 'healthy';
    if (path.endsWith('.failed') || RESTORING.has(top)) return 'unhealthy';
    if (top === 'deprovisioning' || top === 'deleted') return 'gone';
    return 'neutral';
  }
  return 'neutral';
}

/**
 * Seconds an entity may stay in a state before a human is paged, as data. A server that
 * does not answer gets a minute of automation; one that restarts cannot fix is someone's
 * problem at once, after a minute to be sure. PGFLEET_STUCK_AFTER overrides them all.
 */
export const STUCK_AFTER: Record<string, number> = {
  'server.unreachable': 60,
  'server.restarting': 180,
  'server.failed': 60,
  'server.maintaining': 600,
  'resource.failed': 300,
  'resource.failover': 60,
  'resource.rejoining': 600,
  'resource.replacing': 600,
  // Commits wait (a strict plan): writes are down and only the standby can end it.
  'resource.stalled': 10,
};

export function stuckAfter(machine: MachineName, path: string, override: number | undefined): number {
  if (override !== undefined) return override;
  const top = path.split('.')[0]!;
  // Without a synchronous copy, the window in which a lost primary loses commits: PGFLEET_SYNC_PAGE_AFTER.
  if (machine === 'resource' && top === 'unsynchronized' && !path.endsWith('.failed')) return settings.syncPageAfter;
  return STUCK_AFTER[`${machine}.${path.endsWith('.failed') ? 'failed' : top}`] ?? STUCK_AFTER[`${machine}.${top}`] ?? 0;
}

/** What an operator reads first: the trouble in words. */
function troubleReason(machine: MachineName, path: string): string {
  if (machine === 'server') {
    const top = path.split('.')[0];
    if (top === 'unreachable') return 'server unreachable';
    if (top === 'restarting') return 'server restarting';
    return 'restart failing';
  }
  const top = path.split('.')[0];
  if (top === 'failover') return 'primary lost: failing over to the standby';
  if (top === 'rejoining') return 'restoring the standby after a failover';
  if (top === 'replacing') return 'standby lost: replacing it';
  if (top === 'unsynchronized') return 'running without a synchronous copy';
  if (top === 'stalled') return 'synchronous standby stalled: commits wait';
  return `${path.replace(/\.failed$/, '')} failing`;
}

export interface IncidentSettings {
  stuckAfter: number | undefined;
  /** Seconds trouble lasts before its customers are told (PGFLEET_NOTICE_GRACE). */
  noticeGrace: number;
  /** Seconds a database may run without a synchronous copy before a human is paged (PGFLEET_SYNC_PAGE_AFTER). */
  syncPageAfter: number;
}

let settings: IncidentSettings = { stuckAfter: undefined, noticeGrace: 0, syncPageAfter: 60 };

/** The deadline override comes from the configuration, once, at start-up. */
export function configureIncidents(next: IncidentSettings): void {
  settings = next;
}

/** Incidents that follow the entity now: its open trouble, or a changeover under way. */
async function following(db: Queryable, entityId: string): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `select i.id from incidents i join machines m on m.entity_id = i.id
     where i.entity_id = $1 and i.resolved_at is null and (i.kind = 'trouble' or m.state in ('changing', 'escalated'))
     order by i.opened_at`,
    [entityId],
  );
  return rows.map((r) => r.id);
}

/** Open an incident with its machine, in the caller's transaction. */
export async function openIncident(
  db: Queryable,
  entityId: string,
  kind: IncidentInput['kind'],
  reason: string,
  input: Omit<IncidentInput, 'kind'>,
  scheduledFor?: string,
): Promise<string | undefined> {
  if (kind === 'trouble') input = { noticeAfter: settings.noticeGrace, ...input };
  const { rows } = await db.query<{ id: string }>(
    `insert into incidents (entity_id, kind, reason, scheduled_for) values ($1, $2, $3, $4)
     on conflict (entity_id) where kind = 'trouble' and resolved_at is null do nothing returning id`,
    [entityId, kind, reason, scheduledFor ?? null],
  );
  const id = rows[0]?.id;
  if (id) await createMachine(db, 'incident', id, { kind, ...input } satisfies IncidentInput);
  return id;
}

/**
 * After every change of an entity's state, in the transaction that stores it: trouble opens
 * an incident or joins the one open; every change is shown to the incidents that follow the
 * entity; an incident that ends is marked resolved.
 */
async function afterStep(db: Queryable, step: StepTaken): Promise<void> {
  const { machine, entityId, at } = step;
  if (machine === 'incident') {
    // now(), like every transition row's time: the timeline's window closes on the last of them.
    if (step.to === 'resolved') await db.query('update incidents set resolved_at = now() where id = $1', [entityId]);
    return;
  }
  const health = healthOf(machine, step.to);
  const limit = stuckAfter(machine, step.to, settings.stuckAfter);
  const open = await following(db, entityId);
  for (const id of open) {
    await sendEvent(db, id, {
      type: 'entity.changed',
      at,
      state: step.to,
      healthy: health === 'healthy' || health === 'gone',
      stuckAfter: limit,
    });
  }
  // A primary whose standby takes over is the resource's trouble, told as its failover.
  if (open.length === 0 && health === 'unhealthy' && !(machine === 'server' && (await standbyTakesOver(db, entityId)))) {
    await openIncident(db, entityId, 'trouble', troubleReason(machine, step.to), { entityState: step.to, since: at, stuckAfter: limit });
  }
}

/**
 * A job raised an unexpected error: page, on the entity's open incident or on a new one.
 * Incidents' own jobs (a pager that does not answer) retry and are not escalated again.
 */
export async function escalateException(db: Queryable, entityId: string, task: string, error: string): Promise<void> {
  const machine = await machineOf(db, entityId);
  if (!machine || machine === 'incident') return;
  await escalate(db, entityId, machine, 'exception', `${task}: ${error}`, `${task} raised an error`);
}

/** A condition no automation handles yet (a filling disk, a failing archive): page now. */
export async function escalateCondition(db: Queryable, entityId: string, condition: string): Promise<void> {
  const machine = await machineOf(db, entityId);
  if (!machine || machine === 'incident') return;
  await escalate(db, entityId, machine, 'no_automation', condition, condition);
}

async function escalate(
  db: Queryable,
  entityId: string,
  machine: MachineName,
  reason: EscalationReason,
  detail: string,
  title: string,
): Promise<void> {
  const path = (await machineState(db, entityId)) ?? '';
  let ids = await following(db, entityId);
  if (ids.length === 0) {
    const { rows } = await db.query<{ now: string }>(`select ${isoTime('clock_timestamp()')} as now`);
    await openIncident(db, entityId, 'trouble', title, {
      entityState: path,
      since: rows[0]!.now,
      stuckAfter: stuckAfter(machine, path, settings.stuckAfter),
    });
    ids = await following(db, entityId);
  }
  // The first incident takes it, unless already paged for this reason: a retried job pages once.
  const id = ids[0];
  if (!id || (await incidentContext(db, id))?.escalations.some((e) => e.reason === reason)) return;
  await sendEvent(db, id, { type: 'escalate', reason, detail });
}

export async function incidentContext(db: Queryable, id: string): Promise<IncidentContext | undefined> {
  const { rows } = await db.query<{ context: IncidentContext }>(
    `select snapshot->'context' as context from machines where entity_id = $1`,
    [id],
  );
  return rows[0]?.context;
}

/**
 * The worker's journal: a job run on an entity with an open incident goes on the incident's
 * timeline, with its result and duration; an unexpected error escalates.
 */
export const incidentJournal: Journal = {
  async ran(db, job, outcome, ms, error) {
    if (!job.entityId) return;
    await db.query(
      `insert into job_runs (entity_id, job_id, task, attempt, outcome, error, duration_ms)
       select $1, $2, $3, $4, $5, $6, $7
       where exists (select 1 from incidents where resolved_at is null and (entity_id = $1 or id = $1))`,
      [job.entityId, job.id, job.task, job.attempts, outcome, error?.slice(0, 1000) ?? null, ms],
    );
  },
  async raised(pool, job, error) {
    if (!job.entityId) return;
    await transaction(pool, (client) => escalateException(client, job.entityId!, job.task, error));
  },
};

/**
 * Schedule maintenance of a server: an incident that tells every customer on it now and
 * restarts the server at `at`, from a delayed job that survives restarts of pgfleet.
 */
export async function scheduleMaintenance(pool: Pool, serverId: string, at: Date): Promise<string | undefined> {
  return transaction(pool, async (client) => {
    const { rows } = await client.query<{ state: string; now: string; starts_in: number }>(
      `select state, ${isoTime('clock_timestamp()')} as now, extract(epoch from $2::timestamptz - clock_timestamp())::float8 as starts_in
       from machines where entity_id = $1 and machine = 'server' and finished_at is null for update`,
      [serverId, at],
    );
    const server = rows[0];
    if (!server) return undefined;
    return openIncident(
      client,
      serverId,
      'maintenance',
      'planned maintenance',
      {
        entityState: server.state,
        since: server.now,
        stuckAfter: stuckAfter('server', 'maintaining', settings.stuckAfter),
        startsIn: Math.ceil(server.starts_in),
      },
      at.toISOString(),
    );
  });
}

/** An operator closes an incident; false when there is no such open incident. */
export async function resolveIncident(pool: Pool, id: string): Promise<boolean> {
  return transaction(pool, async (client) => (await sendEvent(client, id, { type: 'resolve' })) !== undefined);
}

/** Conditions read off a server's observation that no automation handles yet. */
export const CONDITIONS: Record<string, (obs: Record<string, string>) => boolean> = {
  'archive failing': (obs) => obs.archiver_failing === 'true',
  // archive_timeout keeps a healthy archive within a segment or two of the server.
  'archive lagging': (obs) => Number(obs.archive_lag_bytes) > 256 * 1024 ** 2,
  'disk filling': (obs) => Number(obs.disk_total_bytes) > 0 && Number(obs.disk_free_bytes) / Number(obs.disk_total_bytes) < 0.05,
  'transaction ID wraparound approaching': (obs) => Number(obs.oldest_xid_age) > 1_500_000_000,
  // Placement keeps shared tenants' limits within max_connections: a server this full is a bug or a leak.
  'connection slots nearly exhausted': (obs) =>
    Number(obs.max_connections) > 0 && Number(obs.connections) >= 0.95 * Number(obs.max_connections),
  'replication lagging': (obs) => Number(obs.replication_lag_seconds) > 60 || Number(obs.replication_lag_bytes) > 1024 ** 3,
};

/**
 * After an observation: a condition without automation pages a human at once; an incident
 * that a condition opened resolves when that condition has cleared and the entity is healthy.
 */
export async function checkConditions(db: Queryable, machine: MachineName, entityId: string, obs: Record<string, string>): Promise<void> {
  if (machine !== 'server' || obs.reachable !== 'true') return;
  const present = Object.keys(CONDITIONS).filter((name) => CONDITIONS[name]!(obs));
  for (const condition of present) await escalateCondition(db, entityId, condition);
  const { rows } = await db.query<{ id: string }>(
    `select i.id from incidents i join machines e on e.entity_id = i.entity_id
     where i.entity_id = $1 and i.kind = 'trouble' and i.resolved_at is null
       and i.reason = any($2::text[]) and not (i.reason = any($3::text[]))
       and e.state = 'available'`,
    [entityId, Object.keys(CONDITIONS), present],
  );
  for (const { id } of rows) await sendEvent(db, id, { type: 'resolve' });
}

/**
 * Incidents hear every step and every observation the runner publishes, in its transaction
 * (wired in src/subscribers.ts): a change of state may open, join or end an incident; an
 * observation may page a condition or schedule a provider's retirement of a host.
 */
export const incidentSubscriber: StepSubscriber = {
  changed: afterStep,
  async observed(db, { machine, entityId, obs }) {
    await checkConditions(db, machine, entityId, obs);
    await checkProviderNotices(db, machine, entityId, obs);
  },
};

/** How long before a provider retires a host its server is moved off it. */
export const RETIREMENT_LEAD_SECONDS = 3600;

/**
 * A provider's notice that it will retire a server's host (`retirement_at` in the provider's
 * observation, as EC2 announces instance retirements) opens a scheduled incident: customers
 * hear now, and the changeover runs an hour before the provider would pull the host.
 */
export async function checkProviderNotices(
  db: Queryable,
  machine: MachineName,
  serverId: string,
  obs: Record<string, string>,
): Promise<void> {
  if (machine !== 'server' || !obs.retirement_at) return;
  const { rows } = await db.query<{ state: string; now: string; starts_in: number; exists: boolean }>(
    `select m.state, ${isoTime('clock_timestamp()')} as now,
       extract(epoch from $2::timestamptz - clock_timestamp())::float8 - $3 as starts_in,
       exists (select 1 from incidents where entity_id = $1 and kind = 'retirement' and resolved_at is null) as exists
     from machines m where m.entity_id = $1`,
    [serverId, obs.retirement_at, RETIREMENT_LEAD_SECONDS],
  );
  const server = rows[0];
  if (!server || server.exists) return;
  await openIncident(
    db,
    serverId,
    'retirement',
    'provider retires the host',
    {
      entityState: server.state,
      since: server.now,
      stuckAfter: stuckAfter('server', 'maintaining', settings.stuckAfter),
      startsIn: Math.max(0, Math.ceil(server.starts_in)),
    },
    new Date(Date.parse(obs.retirement_at) - RETIREMENT_LEAD_SECONDS * 1000).toISOString(),
  );
}
