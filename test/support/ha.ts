/**
 * What the tests of the `ha` plan share: a system with its router and a stand-in platform that
 * also takes the pages, ha databases provisioned through the add-on API, and the faults and
 * waits those tests make. Call `useHa()` in a describe block; read its fields inside tests.
 */
import path from 'node:path';
import { afterAll, expect } from 'vitest';
import { signalAll } from '../../src/chaos/processes.ts';
import { waitFor } from './db.ts';
import { adminUrl, provisionHa, psql, useSystemWithPlatform } from './system.ts';
import { verifyFull } from './tls.ts';
import { NumberedWriter } from './writer.ts';

/** A server of a resource, as the operator API shows it. */
export type Shown = { id: string; role: string; state: string; port: number };
export type Incident = { id: string; entity: { id: string }; reason: string; state: string; escalations: { reason: string }[] };

export const withRole = (r: { servers: Shown[] }, role: string) => r.servers.find((s) => s.role === role)!;
/** A customer's URL pointed at one server of its database instead of the router. */
export const serverUrl = (url: string, port: number) => Object.assign(new URL(url), { port: String(port) }).toString();

export function useHa() {
  const ctx = useSystemWithPlatform(['web', 'worker', 'clock', 'router'], (platform) => ({
    PGFLEET_HANG_PROBES: '2',
    PGFLEET_READONLY_MAX_LAG: '1MB',
    PAGER_WEBHOOK_URL: `${platform.url}/pager`,
    PGFLEET_SYNC_PAGE_AFTER: '4',
  }));
  /** Walsenders a test stopped: never left frozen, whatever failed (after hooks run last first: before the system stops). */
  const stopped: number[] = [];
  afterAll(() => signalAll(stopped, 'SIGCONT'));

  /** An ha database through the add-on API, once the platform has its config. */
  async function provision(plan = 'ha'): Promise<{ uuid: string; url: string; readOnlyUrl: string }> {
    const { uuid, config } = await provisionHa(ctx.system, ctx.platform, plan);
    expect(Object.keys(config).sort()).toEqual(['PGFLEET_CONNECTION_POOL_URL', 'PGFLEET_READONLY_URL', 'PGFLEET_URL']);
    return { uuid, url: config.PGFLEET_URL!, readOnlyUrl: config.PGFLEET_READONLY_URL! };
  }

  const resource = async (uuid: string) => (await ctx.system.api('GET', `/api/resources/${uuid}`)).body;
  const dataDir = (id: string) => path.join(ctx.system.config.home, 'servers', id, 'data');

  /** The application name (its id, `_` for `-`) of the standby a server's commits wait for. */
  const synchronousStandbyOf = async (serverId: string) =>
    psql(await adminUrl(ctx.db.pool, serverId), `select application_name from pg_stat_replication where sync_state = 'sync'`);

  /** Until the resource is whole again: available, its old primary back as a synchronous standby. */
  async function rejoined(uuid: string, url: string, oldPrimary: string): Promise<{ primary: Shown; standby: Shown }> {
    const r = await waitFor(
      'the old primary to rejoin as a standby',
      async () => {
        const shown = await resource(uuid);
        return shown.state === 'available' &&
          withRole(shown, 'standby')?.id === oldPrimary &&
          withRole(shown, 'standby').state === 'available'
          ? shown
          : undefined;
      },
      90_000,
    );
    const primary = withRole(r, 'primary');
    const standby = withRole(r, 'standby');
    expect(r.servers).toHaveLength(2);
    expect(await psql(serverUrl(url, standby.port), 'select pg_is_in_recovery()')).toBe('t');
    expect(await synchronousStandbyOf(primary.id)).toBe(oldPrimary.replace(/-/g, '_'));
    return { primary, standby };
  }

  /** Make a fault under writes through the resource's URL; resolve once writes resumed. */
  async function underWrites(url: string, table: string, fault: () => Promise<void>): Promise<NumberedWriter> {
    await psql(url, `create table ${table} (n int primary key)`);
    const writer = new NumberedWriter(verifyFull(url, ctx.system.caFile), table);
    writer.start();
    try {
      await waitFor('some commits', async () => writer.acknowledged.length > 50, 10_000, 5);
      writer.fault();
      await fault();
      await waitFor('writes to resume through the same URL', async () => writer.recoveryMs !== undefined, 60_000, 20);
      const after = writer.acknowledged.length;
      await waitFor('more writes', async () => writer.acknowledged.length > after + 20, 10_000, 10);
    } finally {
      await writer.stop();
    }
    return writer;
  }

  /** Freeze the walsender that streams to the resource's standby: replication stalls, both servers stay up. */
  async function stallWalsender(uuid: string): Promise<{ primary: Shown; standby: Shown; admin: string; walsender: number }> {
    const shown = await resource(uuid);
    const primary = withRole(shown, 'primary');
    const standby = withRole(shown, 'standby');
    const admin = await adminUrl(ctx.db.pool, primary.id);
    const walsender = Number(
      await psql(admin, `select pid from pg_stat_replication where application_name = '${standby.id.replace(/-/g, '_')}'`),
    );
    expect(walsender).toBeGreaterThan(0);
    stopped.push(walsender);
    process.kill(walsender, 'SIGSTOP');
    return { primary, standby, admin, walsender };
  }

  const incidentOf = async (uuid: string, reason: string) =>
    ((await ctx.system.api('GET', '/api/incidents')).body as Incident[]).find((i) => i.entity.id === uuid && i.reason === reason);
  const pages = (incidentId: string) =>
    ctx.platform
      .callsTo('POST', '/pager')
      .map((c) => JSON.parse(c.body) as { event_action: string; dedup_key: string })
      .filter((p) => p.dedup_key.includes(incidentId));

  return { ctx, provision, resource, dataDir, synchronousStandbyOf, rejoined, underWrites, stallWalsender, incidentOf, pages };
}
