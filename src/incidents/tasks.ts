import type { IncidentContext, IncidentTask } from '../../machines/incident.ts';
import type { PagingConfig } from '../config.ts';
import type { Queryable } from '../db.ts';
import { healthOf } from './policy.ts';
import { incidentContext, loadIncident, type IncidentRow } from './rows.ts';
import { report, sendEvent } from '../runner/runner.ts';
import type { MachineName } from '../runner/machines.ts';
import { deliverNotifications, postJson } from '../notifications.ts';
import type { Job } from '../queue/jobs.ts';
import { resourcesServedBy } from '../resources/servedBy.ts';
import type { JobContext, TaskHandlers } from '../queue/worker.ts';

/** The PagerDuty Events v2 body for an incident: deduplicated by the incident's id. */
export function pagerEvent(
  paging: PagingConfig,
  incident: IncidentRow,
  context: IncidentContext,
  action: 'trigger' | 'resolve',
  consoleUrl: string | undefined,
) {
  const reasons = [...new Set(context.escalations.map((e) => e.reason))].join(', ');
  return {
    routing_key: paging.routingKey,
    event_action: action,
    dedup_key: incident.id,
    payload: {
      summary: `${incident.reason} on ${incident.entityKind} ${incident.entityId} (${reasons || 'resolved'})`.slice(0, 1024),
      source: incident.entityId,
      severity: 'critical',
      timestamp: new Date().toISOString(),
      component: incident.entityKind,
      class: incident.reason,
      custom_details: { entity_state: context.entityState, escalations: context.escalations },
    },
    ...(consoleUrl ? { links: [{ href: `${consoleUrl}/console/incidents/${incident.id}`, text: 'the incident in pgfleet' }] } : {}),
  };
}

/** Which resources' customers an incident concerns: the resource itself, or those on a server. */
async function affectedResources(db: Queryable, incident: IncidentRow): Promise<string[]> {
  if (incident.entityKind === 'resource') return [incident.entityId];
  return resourcesServedBy(db, incident.entityId);
}

/**
 * Of the customers an incident concerns, those to tell of this phase. Trouble is told after
 * its grace only while the entity is still in trouble: a blip that automation fixed, or a
 * condition on a server that serves its databases well (an archive lagging behind a
 * tenant's big write), is the operator's to hear, not every tenant's. So its resolution is
 * told only to those told it began.
 */
async function toldOf(db: Queryable, incident: IncidentRow, phase: string | undefined, resources: string[]): Promise<string[]> {
  if (incident.kind !== 'trouble' || resources.length === 0) return resources;
  if (phase === 'opened') {
    const context = await incidentContext(db, incident.id);
    return context && healthOf(incident.entityKind as MachineName, context.entityState) === 'unhealthy' ? resources : [];
  }
  const { rows } = await db.query<{ id: string }>(
    `select resource_id as id from notifications where incident_id = $1 and phase = 'opened'`,
    [incident.id],
  );
  return rows.map((r) => r.id).filter((id) => resources.includes(id));
}

const utc = (d: Date | string) => `${new Date(d).toISOString().slice(0, 16).replace('T', ' ')} UTC`;

/** What the customer is told at each phase: what happened, and what to expect. */
export function notificationFor(incident: IncidentRow): { phase: string; subject: string; body: string } | undefined {
  const done = incident.state === 'resolved';
  if (incident.kind === 'trouble') {
    if (!done) {
      return {
        phase: 'opened',
        subject: 'Your database is having trouble',
        body:
          `Since ${utc(incident.openedAt)} your database has been affected by: ${incident.reason}. ` +
          'pgfleet is repairing it automatically; this usually takes under a minute, and nothing is needed from you. ' +
          'Connections may fail meanwhile; applications that reconnect carry on once it is back. ' +
          'We will tell you when it is resolved.',
      };
    }
    return {
      phase: 'resolved',
      subject: 'Your database is healthy again',
      body:
        `The problem that began at ${utc(incident.openedAt)} (${incident.reason}) ` +
        `was resolved at ${utc(incident.resolvedAt ?? new Date())}. Nothing is needed from you.`,
    };
  }
  const what = incident.kind === 'retirement' ? 'its host is being retired by the provider' : 'planned maintenance';
  if (!done && incident.state === 'scheduled') {
    return {
      phase: 'scheduled',
      subject: `Maintenance of your database at ${utc(incident.scheduledFor!)}`,
      body:
        `At ${utc(incident.scheduledFor!)} your database will restart (${what}). ` +
        'Expect its connections to drop for a few seconds; applications that reconnect carry on with the same URL and no change. ' +
        'Committed data is kept.',
    };
  }
  if (done) {
    return {
      phase: 'done',
      subject: 'Maintenance of your database is complete',
      body: `The maintenance scheduled for ${utc(incident.scheduledFor!)} is complete. Nothing is needed from you.`,
    };
  }
  return undefined;
}

export interface IncidentTaskOptions {
  paging: PagingConfig;
  /** This deployment's address, for links in pages. */
  consoleUrl: string | undefined;
}

export function incidentTasks(opts: IncidentTaskOptions): Pick<TaskHandlers, IncidentTask> {
  async function page(job: Job<'page' | 'unpage'>, { pool, log }: JobContext, action: 'trigger' | 'resolve') {
    const incident = await loadIncident(pool, job.entityId);
    const context = await incidentContext(pool, job.entityId);
    if (!incident || !context) throw new Error(`incident ${job.entityId} does not exist`);
    const event = pagerEvent(opts.paging, incident, context, action, opts.consoleUrl);
    if (opts.paging.webhookUrl) await postJson(opts.paging.webhookUrl, event);
    else log.error({ incident: incident.id, action }, 'a page is due but PAGER_WEBHOOK_URL is not set: it is only recorded');
    await pool.query('insert into pages (incident_id, action, payload) values ($1, $2, $3) on conflict (incident_id, action) do nothing', [
      incident.id,
      action,
      event,
    ]);
  }

  return {
    /** The entity's time in its state may have run out: the machine decides. */
    async deadline(job) {
      return report(job, { type: 'deadline' });
    },
    async page(job, ctx) {
      await page(job, ctx, 'trigger');
    },
    async unpage(job, ctx) {
      await page(job, ctx, 'resolve');
    },
    /**
     * Put the phase's notification in the outbox for every affected customer, then deliver
     * what is undelivered.
     */
    async notify(job, { pool }) {
      const incident = await loadIncident(pool, job.entityId);
      if (!incident) throw new Error(`incident ${job.entityId} does not exist`);
      const note = notificationFor(incident);
      const resources = await toldOf(pool, incident, note?.phase, await affectedResources(pool, incident));
      if (note && resources.length > 0) {
        await pool.query(
          `insert into notifications (resource_id, incident_id, phase, subject, body)
           select unnest($1::uuid[]), $2, $3, $4, $5 on conflict (incident_id, resource_id, phase) do nothing`,
          [resources, incident.id, note.phase, note.subject, note.body],
        );
      }
      await deliverNotifications(pool, { incident: incident.id });
    },
    /** The scheduled time has come: the server restarts on purpose, and the incident follows it. */
    async changeover(job, { pool }) {
      const incident = await loadIncident(pool, job.entityId);
      if (!incident) throw new Error(`incident ${job.entityId} does not exist`);
      return {
        commit: async (client) => {
          await sendEvent<'incident'>(client, incident.id, { type: 'changeover.started' }, job.id);
          const serverId = await serverOf(client, incident);
          if (serverId) await sendEvent<'server'>(client, serverId, { type: 'maintain' }, job.id);
        },
      };
    },
  };
}

async function serverOf(db: Queryable, incident: IncidentRow): Promise<string | undefined> {
  if (incident.entityKind === 'server') return incident.entityId;
  const { rows } = await db.query<{ id: string }>(
    `select server_id as id from resource_servers where resource_id = $1 and role = 'primary'`,
    [incident.entityId],
  );
  return rows[0]?.id;
}
