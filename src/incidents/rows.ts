import type { IncidentContext, IncidentInput } from '../../machines/incident.ts';
import { transaction, type Pool, type Queryable } from '../db.ts';
import { createMachine, sendEvent } from '../runner/runner.ts';
import { incidentSettings } from './policy.ts';

export interface IncidentRow {
  id: string;
  entityId: string;
  entityKind: string;
  kind: 'trouble' | 'maintenance' | 'retirement';
  reason: string;
  state: string;
  scheduledFor: Date | null;
  openedAt: Date;
  resolvedAt: Date | null;
}

export async function loadIncident(db: Queryable, id: string): Promise<IncidentRow | undefined> {
  const { rows } = await db.query<IncidentRow>(
    `select i.id, i.entity_id as "entityId", e.machine as "entityKind", i.kind, i.reason, m.state,
       i.scheduled_for as "scheduledFor", i.opened_at as "openedAt", i.resolved_at as "resolvedAt"
     from incidents i join entity_states m on m.entity_id = i.id left join entity_states e on e.entity_id = i.entity_id
     where i.id = $1`,
    [id],
  );
  return rows[0];
}

/** Incidents that follow the entity now: its open trouble, or a changeover under way. */
export async function following(db: Queryable, entityId: string): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `select i.id from incidents i join entity_states m on m.entity_id = i.id
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
  if (kind === 'trouble') input = { noticeAfter: incidentSettings().noticeGrace, ...input };
  const { rows } = await db.query<{ id: string }>(
    `insert into incidents (entity_id, kind, reason, scheduled_for) values ($1, $2, $3, $4)
     on conflict (entity_id) where kind = 'trouble' and resolved_at is null do nothing returning id`,
    [entityId, kind, reason, scheduledFor ?? null],
  );
  const id = rows[0]?.id;
  if (id) await createMachine(db, 'incident', id, { kind, ...input } satisfies IncidentInput);
  return id;
}

export async function incidentContext(db: Queryable, id: string): Promise<IncidentContext | undefined> {
  const { rows } = await db.query<{ context: IncidentContext }>(`select context from entity_states where entity_id = $1`, [id]);
  return rows[0]?.context;
}

/** An operator closes an incident; false when there is no such open incident. */
export async function resolveIncident(pool: Pool, id: string): Promise<boolean> {
  return transaction(pool, async (client) => (await sendEvent<'incident'>(client, id, { type: 'resolve' })) !== undefined);
}
