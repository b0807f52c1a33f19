import type { Pool, Queryable } from './db.ts';
import { enqueue } from './queue/jobs.ts';

/**
 * Customer notifications: an outbox in the control database, shown on the resource's SSO
 * page and delivered to its webhook (`notify_url`) with retries. Most come from incidents;
 * a few concern one tenant alone (its database passed its plan's size) and have none.
 */
export interface Notice {
  phase: string;
  subject: string;
  body: string;
}

/** POST a JSON body to a webhook (a customer's, the pager's); anything but a 2xx throws. */
export async function postJson(url: string, body: unknown): Promise<void> {
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
      redirect: 'error',
    });
  } catch (err) {
    throw new Error(`POST ${url} did not answer: ${(err as Error).message}`);
  }
  if (!res.ok) throw new Error(`POST ${url} answered ${res.status}`);
}

/**
 * Deliver what is undelivered, of one incident or of one resource's own notices, to the
 * resources' webhooks. A delivery that fails throws, so the job retries with backoff.
 */
export async function deliverNotifications(pool: Pool, of: { incident: string } | { resource: string }): Promise<void> {
  const [where, id] =
    'incident' in of ? ['n.incident_id = $1', of.incident] : ['n.resource_id = $1 and n.incident_id is null', of.resource];
  const { rows } = await pool.query<{
    id: string;
    url: string;
    resource_id: string;
    incident_id: string | null;
    phase: string;
    subject: string;
    body: string;
    created_at: Date;
  }>(
    `select n.id, r.notify_url as url, n.resource_id, n.incident_id, n.phase, n.subject, n.body, n.created_at
     from notifications n join resources r on r.id = n.resource_id
     where ${where} and n.delivered_at is null and r.notify_url is not null order by n.id`,
    [id],
  );
  for (const n of rows) {
    try {
      await postJson(n.url, {
        resource_id: n.resource_id,
        incident_id: n.incident_id,
        phase: n.phase,
        subject: n.subject,
        body: n.body,
        at: n.created_at,
      });
      await pool.query('update notifications set delivered_at = now(), attempts = attempts + 1, last_error = null where id = $1', [n.id]);
    } catch (err) {
      await pool.query('update notifications set attempts = attempts + 1, last_error = $2 where id = $1', [n.id, (err as Error).message]);
      throw err;
    }
  }
}

/** A notice for one resource's customer alone, delivered by a job, in the caller's transaction. */
export async function noticeToResource(db: Queryable, resourceId: string, notice: Notice): Promise<void> {
  await db.query('insert into notifications (resource_id, phase, subject, body) values ($1, $2, $3, $4)', [
    resourceId,
    notice.phase,
    notice.subject,
    notice.body,
  ]);
  await enqueue(db, { task: 'notify_resource', entityId: null, payload: { resource: resourceId } });
}
