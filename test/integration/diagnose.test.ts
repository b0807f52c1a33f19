import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.ts';
import { addonFetch, startSystem, type System } from '../support/system.ts';
import { verifyFull } from '../support/tls.ts';

describe('info and diagnose of a customer database', () => {
  let db: TestDatabase;
  let system: System;
  let id: string;
  let url: string;
  const clients: pg.Client[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    system = await startSystem(db.url);
    id = randomUUID();
    const res = await addonFetch(system, 'POST', '/heroku/resources', { uuid: id, plan: 'shared', region: 'us' });
    url = ((await res.json()) as { config: { PGFLEET_URL: string } }).config.PGFLEET_URL;
  });
  afterAll(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
    await system?.stop();
    await db?.drop();
  });

  const connect = async () => {
    const c = new pg.Client({ connectionString: verifyFull(url, system.caFile) });
    c.on('error', () => undefined);
    await c.connect();
    clients.push(c);
    return c;
  };
  const status = (checks: { name: string; status: string }[]) => Object.fromEntries(checks.map((c) => [c.name, c.status]));

  it('shows the database like pg:info', async () => {
    const c = await connect();
    await c.query('create table t (n int); insert into t values (1)');
    const info = await system.api('GET', `/api/resources/${id}/info`);
    expect(info.status).toBe(200);
    expect(info.body).toMatchObject({ id, plan: 'shared', status: 'available', connections: '1/20', tables: 1, region: 'us' });
    expect(info.body.pgVersion).toMatch(/^\d+/);
    expect(info.body.dataSize).toMatch(/\d+ (kB|MB)/);
  });

  it('is all green on a quiet database, and names blocking, long and idle transactions when they happen', async () => {
    const quiet = await system.api('GET', `/api/resources/${id}/diagnose`);
    expect(quiet.status).toBe(200);
    expect(Object.values(status(quiet.body))).toEqual(Array(9).fill('green'));
    expect(Object.keys(status(quiet.body))).toEqual([
      'connection count',
      'long running queries',
      'long transactions',
      'idle in transaction',
      'blocking queries',
      'unused indexes',
      'bloat',
      'hit rate',
      'xid wraparound',
    ]);

    // One session holds a lock and sits idle in its transaction; another waits on it.
    const holder = await connect();
    await holder.query('begin');
    await holder.query('lock table t in access exclusive mode');
    const waiter = await connect();
    const waiting = waiter.query('select count(*) from t').catch(() => undefined);
    const checks = await waitFor('the diagnosis to see it', async () => {
      const res = await system.api('GET', `/api/resources/${id}/diagnose?long=1`);
      const s = status(res.body);
      // Each check turns once its session has been at it for over a second.
      return s['blocking queries'] === 'red' && s['idle in transaction'] !== 'green' && s['long running queries'] !== 'green'
        ? res.body
        : undefined;
    });
    const s = status(checks);
    expect(s).toMatchObject({
      'blocking queries': 'red',
      'long transactions': 'yellow',
      'long running queries': 'yellow',
      'connection count': 'green',
    });
    const blocking = checks.find((c: { name: string }) => c.name === 'blocking queries');
    expect(blocking.rows[0]).toMatchObject({
      blocked_pid: (waiter as unknown as { processID: number }).processID,
      blocking_pid: (holder as unknown as { processID: number }).processID,
    });
    await holder.query('rollback');
    await waiting;
    expect(status((await system.api('GET', `/api/resources/${id}/diagnose?long=1`)).body)['blocking queries']).toBe('green');
  });

  it('refuses an unknown resource and a bad threshold', async () => {
    expect((await system.api('GET', `/api/resources/${randomUUID()}/diagnose`)).status).toBe(404);
    expect((await system.api('GET', `/api/resources/${id}/diagnose?long=abc`)).body.error).toMatch(/seconds/);
  });
});
