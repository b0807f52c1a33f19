import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { transaction } from '../../src/db.ts';
import { standbyTakesOver } from '../../src/servers/rows.ts';
import { takeOver } from '../../src/resources/rows.ts';
import { useTestDatabase } from '../support/db.ts';

/**
 * The swap of roles at a failover, a switchover or a plan move. A unique index allows one
 * primary per resource and Postgres checks it row by row, so a swap in one UPDATE worked
 * or failed with the rows' physical order: a shared → dedicated move failed seven times on
 * `resource_servers_one_primary` while the tenant could not log in.
 */
describe('takeOver', () => {
  const ctx = useTestDatabase();

  async function resourceWith(order: ('primary' | 'target' | 'standby')[]): Promise<{ id: string; servers: Record<string, string> }> {
    const id = randomUUID();
    const suffix = id.slice(0, 8);
    await ctx.db.pool.query(
      `insert into resources (id, plan, region, aws_region, database_name, role_name, password_sealed)
       values ($1, 'shared', 'us', 'us-east-1', $2, $3, 'x')`,
      [id, `d${suffix}`, `u${suffix}`],
    );
    const servers: Record<string, string> = {};
    // Rows are inserted (and so stored) in the order given: the successor first is the case that broke.
    for (const role of order) {
      const { rows } = await ctx.db.pool.query<{ id: string }>(
        `insert into servers (provider, superuser_password_sealed) values ('local', 'x') returning id`,
      );
      servers[role] = rows[0]!.id;
      await ctx.db.pool.query('insert into resource_servers (resource_id, server_id, role) values ($1, $2, $3)', [id, rows[0]!.id, role]);
    }
    return { id, servers };
  }

  async function roles(id: string): Promise<Record<string, string>> {
    const { rows } = await ctx.db.pool.query<{ server_id: string; role: string }>(
      'select server_id, role from resource_servers where resource_id = $1',
      [id],
    );
    return Object.fromEntries(rows.map((r) => [r.server_id, r.role]));
  }

  for (const [successor, order] of [
    ['target', ['target', 'primary']],
    ['target', ['primary', 'target']],
    ['standby', ['standby', 'primary']],
    ['standby', ['primary', 'standby']],
  ] as const) {
    it(`makes the ${successor} the primary whatever the rows' order (${order.join(' before ')})`, async () => {
      const { id, servers } = await resourceWith([...order]);
      await transaction(ctx.db.pool, (client) => takeOver(client, id, successor));
      expect(await roles(id)).toEqual({ [servers[successor]!]: 'primary', [servers.primary!]: 'former' });
    });
  }

  it('is safe to run twice: the second finds no successor and changes nothing', async () => {
    const { id, servers } = await resourceWith(['target', 'primary']);
    for (let i = 0; i < 2; i++) await transaction(ctx.db.pool, (client) => takeOver(client, id, 'target'));
    expect(await roles(id)).toEqual({ [servers.target!]: 'primary', [servers.primary!]: 'former' });
  });
});

/**
 * Whether a lost primary is the failover's to replace rather than its machine's to restart.
 * A standby that is up but not yet synchronous (the old primary rejoining after a failover)
 * may lack acknowledged commits: no failover promotes it, so the primary must be restarted.
 * It had counted, and a new primary killed just after the old one rejoined was never restarted.
 */
describe('standbyTakesOver', () => {
  const ctx = useTestDatabase();

  async function haWith(resourceState: string, standbyState: string): Promise<string> {
    const id = randomUUID();
    const suffix = id.slice(0, 8);
    await ctx.db.pool.query(
      `insert into resources (id, plan, region, aws_region, database_name, role_name, password_sealed)
       values ($1, 'ha', 'us', 'us-east-1', $2, $3, 'x')`,
      [id, `d${suffix}`, `u${suffix}`],
    );
    await ctx.db.pool.query(`insert into machines (entity_id, machine, version, state, snapshot) values ($1, 'resource', 1, $2, '{}')`, [
      id,
      resourceState,
    ]);
    const servers: string[] = [];
    for (const [role, state] of [
      ['primary', 'restarting'],
      ['standby', standbyState],
    ]) {
      const { rows } = await ctx.db.pool.query<{ id: string }>(
        `insert into servers (provider, superuser_password_sealed) values ('local', 'x') returning id`,
      );
      servers.push(rows[0]!.id);
      await ctx.db.pool.query(`insert into machines (entity_id, machine, version, state, snapshot) values ($1, 'server', 1, $2, '{}')`, [
        rows[0]!.id,
        state,
      ]);
      await ctx.db.pool.query('insert into resource_servers (resource_id, server_id, role) values ($1, $2, $3)', [id, rows[0]!.id, role]);
    }
    return servers[0]!;
  }

  it('is so while the database is whole or failing over, with its standby available', async () => {
    for (const state of ['available', 'rotating', 'syncing', 'failover'])
      expect(await standbyTakesOver(ctx.db.pool, await haWith(state, 'available'))).toBe(true);
    expect(await standbyTakesOver(ctx.db.pool, await haWith('available', 'rejoining'))).toBe(false);
  });

  it('is not so while its standby is rejoined or built and not yet synchronous', async () => {
    for (const state of ['rejoining', 'replacing', 'adding', 'creating'])
      expect(await standbyTakesOver(ctx.db.pool, await haWith(state, 'available'))).toBe(false);
  });
});
