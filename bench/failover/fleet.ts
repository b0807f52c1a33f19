/**
 * The other servers of the failover benchmark: resources provisioned through the add-on API
 * like the measured one, so that the same worker observes them while the failovers run.
 */
import { randomUUID } from 'node:crypto';
import type { Running } from '../../src/processes/app.ts';
import type { Platform } from '../provision/platform.ts';
import { BASIC, call } from '../support.ts';

/** A resource through the add-on API; its URL from the config PATCH the platform gets. */
export async function provision(
  running: Pick<Running, 'url'>,
  platform: Platform,
  plan: string,
  timeoutMs: number,
): Promise<{ id: string; url: string }> {
  const id = randomUUID();
  const patched = platform.waitFor('PATCH', `/addons/${id}/config`, timeoutMs);
  patched.catch(() => undefined);
  const res = await call(running.url!, 'POST', '/heroku/resources', BASIC, {
    uuid: id,
    plan,
    region: 'amazon-web-services::us-east-1',
    callback_url: `${platform.url}/addons/${id}`,
    name: `bench-${id.slice(0, 8)}`,
    options: {},
    oauth_grant: { code: `grant-${id}`, expires_at: new Date(Date.now() + 300_000).toISOString(), type: 'authorization_code' },
  });
  if (res.status !== 202) throw new Error(`POST /heroku/resources answered ${res.status}: ${JSON.stringify(res.json)}`);
  const patch = await patched;
  const vars = (JSON.parse(patch.body) as { config: { name: string; value: string }[] }).config;
  const url = vars.find((v) => v.name === 'PGFLEET_URL')?.value;
  if (!url) throw new Error(`the PATCH carried no PGFLEET_URL: ${patch.body}`);
  return { id, url };
}

/**
 * Dedicated resources, each a Postgres server (and its pooler) of its own, `parallel` at a
 * time: all at once would queue 30 initdbs on 2 cores and stretch each provision past its
 * timeout. Returns the ids of the resources made.
 */
export async function growFleet(running: Running, platform: Platform, count: number, timeoutMs: number, parallel = 5): Promise<string[]> {
  const made: string[] = [];
  let next = 0;
  const lane = async () => {
    while (next < count) {
      next += 1;
      made.push((await provision(running, platform, 'dedicated', timeoutMs)).id);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, lane));
  return made;
}

/** Servers of the fleet's resources, and how often they were observed between two instants. */
export async function fleetObservations(
  running: Running,
  resources: string[],
  fromMs: number,
  toMs: number,
): Promise<{ servers: number; perServerPerMinute: number }> {
  const { rows } = await running.pool.query<{ servers: number; observations: number }>(
    `select count(distinct rs.server_id)::int as servers, count(o.*)::int as observations
     from resource_servers rs
     left join observations o on o.entity_id = rs.server_id and o.source = 'postgres'
       and o.observed_at between to_timestamp($2::float8 / 1000) and to_timestamp($3::float8 / 1000)
     where rs.resource_id = any($1::uuid[])`,
    [resources, fromMs, toMs],
  );
  const { servers = 0, observations = 0 } = rows[0] ?? {};
  return { servers, perServerPerMinute: servers > 0 && toMs > fromMs ? observations / servers / ((toMs - fromMs) / 60_000) : 0 };
}
