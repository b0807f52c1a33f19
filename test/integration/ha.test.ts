import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.ts';
import { FakePlatform } from '../support/platform.ts';
import { addonFetch, psql, startSystem, type System } from '../support/system.ts';

const run = promisify(execFile);

describe('the ha plan: a primary and a synchronous standby', () => {
  let db: TestDatabase;
  let system: System;
  const platform = new FakePlatform();
  let ha: { uuid: string; url: string };

  beforeAll(async () => {
    db = await createTestDatabase();
    await platform.start();
    system = await startSystem(db.url, ['web', 'worker', 'clock', 'router'], { HEROKU_API_URL: platform.url, HEROKU_ID_URL: platform.url, ADDON_CLIENT_SECRET: 's' });
  });
  afterAll(async () => {
    await system?.stop();
    await platform.stop();
    await db?.drop();
  });

  /** An ha database through the add-on API, once the platform has its config. */
  async function provisionHa(): Promise<{ uuid: string; url: string }> {
    const uuid = randomUUID();
    const res = await addonFetch(system, 'POST', '/heroku/resources', { uuid, plan: 'ha', region: 'us', callback_url: `${platform.url}/addons/${uuid}`, oauth_grant: { code: 'g' } });
    expect(res.status).toBe(202);
    const patch = await waitFor('the config', async () => platform.callsTo('PATCH', `/addons/${uuid}/config`)[0], 120_000);
    return { uuid, url: (JSON.parse(patch.body).config as { value: string }[])[0]!.value };
  }

  it('acknowledges a commit only once the standby has it', async () => {
    const { uuid, url } = await provisionHa();

    const shown = (await system.api('GET', `/api/resources/${uuid}`)).body;
    expect(shown.state).toBe('available');
    expect(shown.servers.map((s: { role: string; state: string }) => `${s.role}:${s.state}`)).toEqual(['primary:available', 'standby:available']);
    const standby = shown.servers.find((s: { role: string }) => s.role === 'standby');
    expect(shown.transitions.map((t: { to: string }) => t.to)).toContain('creating.synchronous.trying');

    await psql(url, 'create table acked (n int)');
    await psql(url, 'insert into acked values (1)');
    const standbyUrl = new URL(url);
    standbyUrl.port = String(standby.port);
    await waitFor('the standby to have the row', async () => (await psql(standbyUrl.toString(), 'select count(*) from acked')) === '1');

    // Freeze the standby (its postmaster and every child, the WAL receiver too): a commit now
    // waits instead of being acknowledged by the primary alone.
    const pid = Number((await readFile(path.join(system.config.home, 'servers', standby.id, 'data', 'postmaster.pid'), 'utf8')).split('\n')[0]);
    const { stdout } = await run('ps', ['-o', 'pid=', '--ppid', String(pid)]);
    const pids = [pid, ...stdout.split('\n').map((l) => Number(l.trim())).filter((n) => n > 0)];
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    let acknowledged = false;
    // A child may have exited since `ps` listed it (an archiver run, say).
    const signal = (sig: NodeJS.Signals) => {
      for (const p of pids) {
        try {
          process.kill(p, sig);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
        }
      }
    };
    signal('SIGSTOP');
    let commit: Promise<unknown>;
    try {
      commit = client.query('insert into acked values (2)').then(() => (acknowledged = true));
      await new Promise((r) => setTimeout(r, 1500));
      expect(acknowledged).toBe(false);
    } finally {
      signal('SIGCONT');
    }
    await commit;
    expect(acknowledged).toBe(true);
    await client.end();
    expect(await psql(standbyUrl.toString(), 'select count(*) from acked')).toBe('2');

    // Plan changes into or out of ha are refused for now, with a reason.
    const put = await addonFetch(system, 'PUT', `/heroku/resources/${uuid}`, { plan: 'dedicated' });
    expect(put.status).toBe(422);
    expect(((await put.json()) as { message: string }).message).toMatch(/standbys is not supported yet/);
    ha = { uuid, url };
  });

  it('fails over when the primary is killed under writes: same URL, no acknowledged row lost', async () => {
    const before = (await system.api('GET', `/api/resources/${ha.uuid}`)).body;
    const oldPrimary = before.servers.find((s: { role: string }) => s.role === 'primary');
    const standby = before.servers.find((s: { role: string }) => s.role === 'standby');
    expect(new URL(ha.url).port).not.toBe(String(oldPrimary.port));
    await psql(ha.url, 'create table numbered (n int primary key)');

    // A writer commits numbered rows through the resource's URL, reconnecting whenever a
    // connection fails, and remembers which commits were acknowledged.
    const acknowledged: number[] = [];
    let killedAt = 0;
    let resumedAt = 0;
    let stop = false;
    const writing = (async () => {
      let client: pg.Client | undefined;
      for (let n = 1; !stop; ) {
        try {
          if (!client) {
            // Bounded waits, as production clients have: a commit the old primary holds while
            // it waits for its standby is not acknowledged, and the writer moves on.
            client = new pg.Client({ connectionString: ha.url, connectionTimeoutMillis: 2000, query_timeout: 3000 });
            client.on('error', () => undefined);
            await client.connect();
          }
          await client.query('insert into numbered values ($1)', [n]);
          acknowledged.push(n);
          if (killedAt && !resumedAt) resumedAt = Date.now();
        } catch {
          // Not awaited: end() on a connection that broke can wait forever.
          void client?.end().catch(() => undefined);
          client = undefined;
          await new Promise((r) => setTimeout(r, 50));
        } finally {
          // A failed commit may still have happened (the primary died before answering):
          // never reuse its number, or the retry would hit the row it did commit.
          n++;
        }
      }
      await client?.end().catch(() => undefined);
    })();
    await waitFor('some commits', async () => acknowledged.length > 50, 10_000, 5);
    const pid = Number((await readFile(path.join(system.config.home, 'servers', oldPrimary.id, 'data', 'postmaster.pid'), 'utf8')).split('\n')[0]);
    process.kill(pid, 'SIGKILL');
    killedAt = Date.now();
    await waitFor('writes to resume through the same URL', async () => resumedAt > 0, 60_000, 20);
    const afterKill = acknowledged.length;
    await waitFor('more writes', async () => acknowledged.length > afterKill + 20, 10_000, 10);
    stop = true;
    await writing;

    const after = (await system.api('GET', `/api/resources/${ha.uuid}`)).body;
    expect(after.state).toBe('available');
    expect(after.servers.find((s: { id: string }) => s.id === standby.id)).toMatchObject({ role: 'primary' });
    expect(after.servers.find((s: { id: string }) => s.id === oldPrimary.id)).toMatchObject({ role: 'former', state: 'fenced' });
    expect(after.transitions.map((t: { to: string }) => t.to)).toEqual(expect.arrayContaining(['failover.fencing.trying', 'failover.waiting', 'failover.promoting.trying']));
    // The URL did not change: clients only reconnected.
    expect(after.config.PGFLEET_URL).toBe(ha.url);
    expect(await psql(ha.url, 'select inet_server_port(), pg_is_in_recovery()')).toBe(`${standby.port}|f`);
    const missing = await psql(ha.url, `select count(*) from unnest($$${`{${acknowledged.join(',')}}`}$$::int[]) a(n) where not exists (select 1 from numbered where numbered.n = a.n)`);
    expect(missing).toBe('0');
    // The old primary stays down: there are never two primaries.
    const { rows: [server] } = await db.pool.query('select state from machines where entity_id = $1', [oldPrimary.id]);
    expect(server.state).toBe('fenced');
  });

  it('switches over by hand (pgfleet promote): the standby takes over with every row, through the same URL', async () => {
    const { uuid, url } = await provisionHa();
    await psql(url, 'create table kept (n int)');
    await psql(url, 'insert into kept select generate_series(1, 1000)');
    const before = (await system.api('GET', `/api/resources/${uuid}`)).body;
    const standby = before.servers.find((s: { role: string }) => s.role === 'standby');

    expect((await system.api('POST', `/api/resources/${uuid}/promote`)).status).toBe(202);
    await waitFor('the switchover', async () => {
      const r = (await system.api('GET', `/api/resources/${uuid}`)).body;
      return r.state === 'available' && r.servers.some((s: { id: string; role: string }) => s.id === standby.id && s.role === 'primary');
    }, 60_000);
    expect(await waitFor('the router to follow', async () => {
      const port = await psql(url, 'select inet_server_port()').catch(() => '');
      return port === String(standby.port) ? port : undefined;
    })).toBe(String(standby.port));
    expect(await psql(url, 'select count(*) from kept')).toBe('1000');
    await psql(url, 'insert into kept values (1001)');
    // Now there is no standby left to promote: refused with the reason.
    const again = await system.api('POST', `/api/resources/${uuid}/promote`);
    expect(again.status).toBe(409);
    expect(again.body.error).toMatch(/no available standby/);
  });
});
