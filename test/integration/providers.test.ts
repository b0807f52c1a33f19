import { describe, expect, it } from 'vitest';
import type { ServerRecord } from '../../src/providers/provider.ts';
import { PROVIDERS } from '../../src/providers/registry.ts';
import { waitFor } from '../support/db.ts';
import { provisionHa, psql, TEST_SEALER, useSystemWithPlatform } from '../support/system.ts';
import { verifyFull } from '../support/tls.ts';
import { NumberedWriter } from '../support/writer.ts';

/** The status of a health check at a server's address, or why it could not be asked. */
const check = (host: string, port: string, route: string) =>
  fetch(`http://${host}:${port}${route}`, { method: 'OPTIONS' }).then(
    (res) => res.status,
    (err: Error) => String((err.cause as Error | undefined)?.message ?? err.message),
  );

/**
 * The whole system on every registered provider: an `ha` database made through the add-on
 * API on it (PGFLEET_PROVIDER) is reached through its URLs, its servers answer their health
 * checks where HAProxy asks them, and it fails over and heals. The fault is made through the
 * provider's own host (`kill`), so nothing here knows where a provider keeps its servers.
 */
for (const name of Object.keys(PROVIDERS)) {
  describe(`an ha database on the ${name} provider`, { timeout: 240_000 }, () => {
    const ctx = useSystemWithPlatform(['web', 'worker', 'clock', 'router'], { PGFLEET_PROVIDER: name, PGFLEET_HANG_PROBES: '2' });

    type Placed = ServerRecord & { role: string; state: string; healthPort: string };
    const servers = async (uuid: string): Promise<Placed[]> => {
      const { rows } = await ctx.db.pool.query<{
        id: string;
        provider: string;
        host: string;
        port: number;
        sealed: string;
        attrs: Record<string, string>;
        role: string;
        state: string;
      }>(
        `select s.id, s.provider, s.host, s.port, s.superuser_password_sealed as sealed, hstore_to_json(s.attrs) as attrs, rs.role, m.state
         from resource_servers rs join servers s on s.id = rs.server_id join entity_states m on m.entity_id = s.id
         where rs.resource_id = $1 order by rs.role`,
        [uuid],
      );
      return rows.map((r) => ({
        id: r.id,
        provider: r.provider,
        host: r.host,
        port: r.port,
        superuserPassword: TEST_SEALER.open(r.sealed),
        attrs: r.attrs,
        role: r.role,
        state: r.state,
        healthPort: r.attrs.health_port!,
      }));
    };

    it('is reached through its URLs, answers health checks at its servers, fails over under writes and rejoins', async () => {
      const { uuid, config } = await provisionHa(ctx.system, ctx.platform);
      const url = verifyFull(config.PGFLEET_URL!, ctx.system.caFile);
      const [primary, standby] = await servers(uuid);
      expect([primary!.role, standby!.role]).toEqual(['primary', 'standby']);
      expect([primary!.provider, standby!.provider]).toEqual([name, name]);

      await psql(url, 'create table acked (n int primary key)');
      expect(await psql(verifyFull(config.PGFLEET_CONNECTION_POOL_URL!, ctx.system.caFile), 'select count(*) from acked')).toBe('0');
      expect([
        await check(primary!.host!, primary!.healthPort, '/primary'),
        await check(standby!.host!, standby!.healthPort, '/replica'),
      ]).toEqual([200, 200]);

      const writer = new NumberedWriter(url, 'acked');
      writer.start();
      try {
        await waitFor('some commits', async () => writer.acknowledged.length > 50, 10_000, 5);
        writer.fault();
        await ctx.system.running.providers[name]!.host(primary!).kill();
        await waitFor('writes to resume through the same URL', async () => writer.recoveryMs !== undefined, 60_000, 20);
        const after = writer.acknowledged.length;
        await waitFor('more writes', async () => writer.acknowledged.length > after + 20, 10_000, 10);
      } finally {
        await writer.stop();
      }
      expect(await writer.missing()).toEqual([]);

      const healed = await waitFor(
        'the old primary to rejoin as the standby',
        async () => {
          const now = await servers(uuid);
          return now.find((s) => s.role === 'standby')?.id === primary!.id && now.every((s) => s.state === 'available') ? now : undefined;
        },
        90_000,
      );
      const [promoted, rejoined] = healed;
      expect(promoted!.id).toBe(standby!.id);
      expect(await psql(url, 'select count(*) > 0 from acked')).toBe('t');
      expect([
        await check(promoted!.host!, promoted!.healthPort, '/primary'),
        await check(rejoined!.host!, rejoined!.healthPort, '/replica'),
      ]).toEqual([200, 200]);
    });
  });
}
