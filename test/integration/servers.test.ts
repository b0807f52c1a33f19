import { existsSync } from 'node:fs';
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer } from '../../src/servers/rows.ts';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.ts';
import { adminUrl, psql, startSystem, TEST_SEALER, type System } from '../support/system.ts';

interface ServerBody {
  id: string;
  state: string;
  host: string;
  port: number;
  observedAt: string | null;
  observation: Record<string, string>;
  transitions: { from: string | null; to: string; event: string; at: string }[];
}

describe('the observe → decide → act loop on real local Postgres', () => {
  let db: TestDatabase;
  let system: System;

  beforeAll(async () => {
    db = await createTestDatabase();
    system = await startSystem(db.url);
  });
  afterAll(async () => {
    await system?.stop();
    await db?.drop();
  });

  const show = async (id: string) => (await system.api('GET', `/api/servers/${id}`)).body as ServerBody;

  it('creates a server that becomes available, accepts psql, survives kill -9 and is deleted', async () => {
    const created = await system.api('POST', '/api/servers', { provider: 'local' });
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    expect(created.body.state).toBe('provisioning');

    const available = await waitFor('the server to become available', async () => {
      const s = await show(id);
      return s.state === 'available' ? s : undefined;
    });
    expect(available.observation.reachable).toBe('true');
    expect(available.observation.version).toMatch(/^\d+/);
    expect(available.transitions.map((t) => t.to).reverse()).toEqual([
      'provisioning',
      'initializing',
      'starting.running',
      'starting.verifying',
      'available',
    ]);

    const url = await adminUrl(db.pool, id);
    expect(await psql(url, 'select 40 + 2')).toBe('42');
    // The control database holds the password sealed, not in plain text.
    const { rows: raw } = await db.pool.query('select s::text as row from servers s where id = $1', [id]);
    expect(raw[0].row).not.toContain(new URL(url).password);
    await psql(url, 'create table kept (n int); insert into kept values (1), (2), (3)');

    // The observers record, the machine decides: kill the postmaster and let it heal.
    const dataDir = path.join(system.config.home, 'servers', id, 'data');
    const pid = Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    process.kill(pid, 'SIGKILL');
    const healed = await waitFor('the server to come back after kill -9', async () => {
      const s = await show(id);
      return s.state === 'available' && s.transitions.some((t) => t.to === 'unreachable') ? s : undefined;
    });
    const path_ = healed.transitions.map((t) => t.to).reverse();
    expect(path_.slice(path_.indexOf('unreachable'))).toEqual(['unreachable', 'restarting.running', 'restarting.verifying', 'available']);
    expect(await psql(url, 'select sum(n) from kept')).toBe('6');
    const newPid = Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    expect(newPid).not.toBe(pid);

    const deleted = await system.api('DELETE', `/api/servers/${id}`);
    expect(deleted.status).toBe(202);
    await waitFor('the server to be deleted', async () => (await show(id)).state === 'deleted');
    expect(existsSync(path.dirname(dataDir))).toBe(false);
    expect((await system.api('GET', '/api/servers')).body.map((s: ServerBody) => s.id)).not.toContain(id);
    expect((await system.api('DELETE', `/api/servers/${id}`)).status).toBe(404);
  });
  it('holds a server that restarts cannot bring back in failed, touching nothing, and recovers once it is fixed', async () => {
    const id = (await system.api('POST', '/api/servers', { provider: 'local' })).body.id as string;
    await waitFor('available', async () => (await show(id)).state === 'available');
    const url = await adminUrl(db.pool, id);
    await psql(url, "create table only_copy (v text); insert into only_copy values ('keep me')");

    const dataDir = path.join(system.config.home, 'servers', id, 'data');
    const conf = path.join(dataDir, 'postgresql.conf');
    const good = await readFile(conf, 'utf8');
    await appendFile(conf, "\nshared_buffers = 'a lot'\n");
    const pid = Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    process.kill(pid, 'SIGKILL');

    const failed = await waitFor('the server to be failed', async () => {
      const s = await show(id);
      return s.state === 'failed' ? s : undefined;
    });
    const restarts = failed.transitions.filter((t) => t.to === 'restarting.running');
    expect(restarts.length).toBeGreaterThanOrEqual(3);
    expect(existsSync(path.join(dataDir, 'PG_VERSION'))).toBe(true);
    expect(await readFile(conf, 'utf8')).toContain("shared_buffers = 'a lot'");

    // An operator fixes the configuration; the failed server's next retry brings it back.
    await writeFile(conf, good);
    await waitFor('the server to recover', async () => (await show(id)).state === 'available', 60_000);
    expect(await psql(url, 'select v from only_copy')).toBe('keep me');
  });
});

describe('jobs that fall out', () => {
  it('are put back by the clock: a server whose jobs were all deleted by hand still becomes available', async () => {
    const db = await createTestDatabase();
    // Create the server with no worker running, then delete every job it has.
    const server = await createServer(db.pool, TEST_SEALER, 'local');
    const { rowCount } = await db.pool.query('delete from jobs where entity_id = $1', [server.id]);
    expect(rowCount).toBe(1);
    const system = await startSystem(db.url, ['worker', 'clock']);
    try {
      await waitFor('the clock to put jobs back', async () => {
        const { rows } = await db.pool.query(
          'select 1 from jobs where entity_id = $1 or exists (select 1 from observations where entity_id = $1)',
          [server.id],
        );
        return rows.length > 0;
      });
      await waitFor('the server to become available', async () => {
        const { rows } = await db.pool.query<{ state: string }>('select state from machines where entity_id = $1', [server.id]);
        return rows[0]!.state === 'available';
      });
      expect(await psql(await adminUrl(db.pool, server.id), 'select 1')).toBe('1');
    } finally {
      await system.stop();
      await db.drop();
    }
  });
});
