import type { EscalationReason } from '../../machines/incident.ts';
import { statesTagged } from '../../machines/policy.ts';
import { isoTime, transaction, type Queryable } from '../db.ts';
import type { Journal } from '../queue/worker.ts';
import { MACHINES, type MachineName } from '../runner/machines.ts';
import { sendEvent } from '../runner/runner.ts';
import { machineOf, machineState } from '../runner/store.ts';
import { CONDITIONS, incidentSettings, stuckAfter } from './policy.ts';
import { following, incidentContext, openIncident } from './rows.ts';

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
      stuckAfter: stuckAfter(machine, path, incidentSettings().stuckAfter),
    });
    ids = await following(db, entityId);
  }
  // The first incident takes it, unless already paged for this reason: a retried job pages once.
  const id = ids[0];
  if (!id || (await incidentContext(db, id))?.escalations.some((e) => e.reason === reason)) return;
  await sendEvent<'incident'>(db, id, { type: 'escalate', reason, detail });
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
    const { entityId } = job;
    if (!entityId) return;
    await transaction(pool, (client) => escalateException(client, entityId, job.task, error));
  },
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
    `select i.id from incidents i join entity_states e on e.entity_id = i.entity_id
     where i.entity_id = $1 and i.kind = 'trouble' and i.resolved_at is null
       and i.reason = any($2::text[]) and not (i.reason = any($3::text[]))
       and e.state = any($4::text[])`,
    [entityId, Object.keys(CONDITIONS), present, statesTagged(MACHINES[machine].logic, 'healthy')],
  );
  for (const { id } of rows) await sendEvent<'incident'>(db, id, { type: 'resolve' });
}
