import type { Escalation } from '../../machines/incident.ts';
import { isoTime, type Queryable } from '../db.ts';
import { transitionLog } from '../runner/store.ts';

export interface IncidentView {
  id: string;
  entity: { id: string; kind: string; state: string | null };
  kind: string;
  state: string;
  reason: string;
  scheduledFor: Date | null;
  openedAt: Date;
  resolvedAt: Date | null;
  escalations: Escalation[];
}

export interface TimelineEntry {
  at: string;
  kind: 'observation' | 'transition' | 'job' | 'escalation' | 'page' | 'notification';
  /** Which machine or table it came from: `server`, `incident`, `pager`, … */
  source: string;
  summary: string;
  details?: Record<string, unknown>;
}

const VIEW_SQL = `
  select i.id, json_build_object('id', i.entity_id, 'kind', e.machine, 'state', e.state) as entity, i.kind, m.state, i.reason,
    i.scheduled_for as "scheduledFor", i.opened_at as "openedAt", i.resolved_at as "resolvedAt",
    coalesce(m.context->'escalations', '[]') as escalations
  from incidents i join entity_states m on m.entity_id = i.id left join entity_states e on e.entity_id = i.entity_id`;

/** Open incidents first, then the most recent others. */
export async function listIncidents(db: Queryable, limit = 100): Promise<IncidentView[]> {
  const { rows } = await db.query<IncidentView>(`${VIEW_SQL} order by i.resolved_at is null desc, i.opened_at desc limit $1`, [limit]);
  return rows;
}

export async function listIncidentsOf(db: Queryable, entityId: string, limit = 20): Promise<IncidentView[]> {
  const { rows } = await db.query<IncidentView>(`${VIEW_SQL} where i.entity_id = $1 order by i.opened_at desc limit $2`, [entityId, limit]);
  return rows;
}

/** The keys of an observation worth a line: what changed the machine's mind. */
function observationSummary(obs: Record<string, string>): string {
  const keys = ['reachable', 'alive', 'error', 'primary.state', 'target.state', 'tenant.reachable'];
  return (
    keys
      .filter((k) => obs[k] !== undefined)
      .map((k) => `${k}=${obs[k]}`)
      .join(' ') || 'observed'
  );
}

/**
 * Everything that happened to the incident and its entity while it was open, in time
 * order: observations that moved a machine, the transitions themselves, jobs run (with
 * result and duration), escalations, pages and notifications to customers.
 */
export async function incidentTimeline(db: Queryable, incident: IncidentView): Promise<TimelineEntry[]> {
  const params = [incident.id, incident.entity.id];
  // The entity's own rows while the incident was open; its opening shares the incident's
  // transaction, so the first of them carries the very same time.
  // (Read from the row, not passed in: a JavaScript Date would cut the microseconds.)
  const window = `between (select opened_at from incidents where id = $1)
    and coalesce((select resolved_at from incidents where id = $1), now())`;
  const { rows: span } = await db.query<{ opened: string; resolved: string | null }>(
    `select ${isoTime('opened_at')} as opened, ${isoTime('resolved_at')} as resolved from incidents where id = $1`,
    [incident.id],
  );
  const [transitions, jobs, pages, notes] = await Promise.all([
    transitionLog(db, incident.id, { entityId: incident.entity.id, from: span[0]?.opened ?? null, until: span[0]?.resolved ?? null }),
    db.query<{ at: Date; task: string; outcome: string; ms: number; error: string | null; attempt: number; entity: string }>(
      `select finished_at as at, task, outcome, duration_ms as ms, error, attempt, entity_id::text as entity from job_runs
       where entity_id = $1 or (entity_id = $2 and finished_at ${window}) order by id`,
      params,
    ),
    db.query<{ at: Date; action: string }>('select sent_at as at, action from pages where incident_id = $1 order by id', [incident.id]),
    db.query<{
      at: Date;
      resource: string;
      phase: string;
      subject: string;
      delivered: Date | null;
      attempts: number;
      error: string | null;
    }>(
      `select created_at as at, resource_id::text as resource, phase, subject, delivered_at as delivered, attempts, last_error as error
       from notifications where incident_id = $1 order by id`,
      [incident.id],
    ),
  ]);
  const entries: TimelineEntry[] = [];
  for (const t of transitions) {
    // The incident re-arming its deadline as its entity moves is not news; the entity's move is.
    if (t.machine === 'incident' && t.from === t.to) continue;
    const at = new Date(t.at).toISOString();
    const obs = t.event === 'observed' ? ((t.data?.obs ?? {}) as Record<string, string>) : undefined;
    if (obs) entries.push({ at, kind: 'observation', source: t.machine, summary: observationSummary(obs), details: obs });
    entries.push({
      at,
      kind: 'transition',
      source: t.machine,
      summary: `${t.from ?? '∅'} → ${t.to} on ${t.event}`,
      details: { from: t.from, to: t.to, event: t.event, job: t.job },
    });
  }
  for (const j of jobs.rows) {
    const source = j.entity === incident.id ? 'incident' : (incident.entity.kind ?? 'entity');
    entries.push({
      at: new Date(j.at).toISOString(),
      kind: 'job',
      source,
      summary: `${j.task} ${j.outcome} in ${j.ms} ms (attempt ${j.attempt})${j.error ? `: ${j.error}` : ''}`,
      details: { ...j },
    });
  }
  for (const e of incident.escalations) {
    entries.push({
      at: new Date(e.at).toISOString(),
      kind: 'escalation',
      source: 'incident',
      summary: `escalated: ${e.reason} (${e.detail})`,
      details: { ...e },
    });
  }
  for (const p of pages.rows)
    entries.push({ at: new Date(p.at).toISOString(), kind: 'page', source: 'pager', summary: `page ${p.action}` });
  for (const n of notes.rows) {
    const status = n.delivered ? 'delivered' : n.attempts > 0 ? `not delivered yet (${n.error})` : 'on the status page';
    entries.push({
      at: new Date(n.at).toISOString(),
      kind: 'notification',
      source: 'customer',
      summary: `${n.phase}: ${n.subject} — ${status}`,
      details: { resource: n.resource },
    });
  }
  // Stable by kind within one instant: what was seen, then what it changed, then the rest.
  const order = ['observation', 'transition', 'escalation', 'job', 'page', 'notification'];
  return entries.sort((a, b) => a.at.localeCompare(b.at) || order.indexOf(a.kind) - order.indexOf(b.kind));
}

export async function getIncident(db: Queryable, id: string): Promise<(IncidentView & { timeline: TimelineEntry[] }) | undefined> {
  const { rows } = await db.query<IncidentView>(`${VIEW_SQL} where i.id = $1`, [id]);
  const incident = rows[0];
  if (!incident) return undefined;
  return { ...incident, timeline: await incidentTimeline(db, incident) };
}

/** What a resource's customer has been told, newest first. */
export async function listNotifications(
  db: Queryable,
  resourceId: string,
  limit = 10,
): Promise<{ at: Date; subject: string; body: string; phase: string }[]> {
  const { rows } = await db.query<{ at: Date; subject: string; body: string; phase: string }>(
    'select created_at as at, subject, body, phase from notifications where resource_id = $1 order by id desc limit $2',
    [resourceId, limit],
  );
  return rows;
}
