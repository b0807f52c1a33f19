/**
 * What the provisioning benchmark's runs share: the running system, provision bodies as the
 * platform sends them, the first `select 1` through a URL, and the milestones a resource's
 * machines recorded.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import type { Running } from '../../src/processes/app.ts';
import { message, sleep } from '../support.ts';
import { wallMs, type Platform } from './platform.ts';
import type { Milestone } from './report.ts';

export interface Context {
  running: Running;
  platform: Platform;
  /** pgfleet's CA certificate, saved as a customer saves it to connect with verify-full. */
  caFile: string;
}

export const web = (ctx: Context) => ctx.running.url!;

/** Pause between tries of `select 1` while the URL does not answer yet. */
export const RETRY_MS = 5;

export function field(value: unknown, ...keys: string[]): unknown {
  let v = value;
  for (const k of keys) v = typeof v === 'object' && v !== null ? (v as Record<string, unknown>)[k] : undefined;
  return v;
}

export function provisionBody(platform: Platform, plan: string) {
  const uuid = randomUUID();
  return {
    uuid,
    plan,
    region: 'amazon-web-services::us-east-1',
    callback_url: `${platform.url}/addons/${uuid}`,
    name: `bench-${uuid.slice(0, 8)}`,
    options: {},
    oauth_grant: { code: `grant-${uuid}`, expires_at: new Date(Date.now() + 300_000).toISOString(), type: 'authorization_code' },
  };
}

/** PGFLEET_URL from the body of the platform's config PATCH. */
export function patchedUrl(body: string): string {
  const vars = field(JSON.parse(body) as unknown, 'config');
  const url = Array.isArray(vars)
    ? field(
        vars.find((v) => field(v, 'name') === 'PGFLEET_URL'),
        'value',
      )
    : undefined;
  if (typeof url !== 'string') throw new Error(`the PATCH carried no PGFLEET_URL: ${body}`);
  return url;
}

/** Try `select 1` through a fresh node-postgres connection until it answers; when it did. */
export async function firstSelect(url: string, deadline: number): Promise<{ at: number; attempts: number }> {
  let lastError = '';
  for (let attempts = 1; ; attempts++) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const { rows } = await client.query<{ one: number }>('select 1 as one');
      const at = wallMs();
      if (rows[0]?.one !== 1) throw new Error(`select 1 answered ${JSON.stringify(rows)}`);
      return { at, attempts };
    } catch (err) {
      lastError = message(err);
    } finally {
      await client.end().catch(() => undefined);
    }
    if (wallMs() > deadline) throw new Error(`no answer to select 1 after ${attempts} tries: ${lastError}`);
    await sleep(RETRY_MS);
  }
}

/**
 * Transitions of the resource's machine and of the server machines it was placed on, made
 * since t0 (`at` is the database's now(): the start of the transaction that committed it).
 */
export async function transitionsSince(ctx: Context, resourceId: string, t0: number): Promise<Milestone[]> {
  const { rows } = await ctx.running.pool.query<{ machine: string; to: string; ms: number }>(
    `select t.machine, t.to_state as "to", (extract(epoch from t.at) * 1000)::float8 as ms
     from transitions t
     where (t.entity_id = $1 or t.entity_id in (select server_id from resource_servers where resource_id = $1))
       and t.at >= to_timestamp($2::float8 / 1000)
     order by t.at, t.id`,
    [resourceId, t0 - 5],
  );
  return rows.map((r) => ({ name: `${r.machine}:${r.to}`, ms: Math.max(0, r.ms - t0) }));
}
