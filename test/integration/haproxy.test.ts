import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/pg/ports.ts';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.ts';
import { FakePlatform } from '../support/platform.ts';
import { adminUrl, provisionHa, psql, startSystem, type System } from '../support/system.ts';
import { clusterPids, signalAll } from '../../src/chaos/processes.ts';

const run = promisify(execFile);

interface Member {
  id: string;
  port: number;
  health: string;
}

describe('Patroni health endpoints behind a real HAProxy', () => {
  let db: TestDatabase;
  let system: System;
  const platform = new FakePlatform();
  let dir: string;
  let haproxy: ChildProcess | undefined;
  let haproxyStderr = '';
  let uuid: string;
  let primary: Member;
  let standby: Member;
  /** The tenant's URL through HAProxy's `primary` and `replicas` frontends. */
  let writeUrl: string;
  let readUrl: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    await platform.start();
    system = await startSystem(db.url, ['web', 'worker', 'clock', 'router'], {
      HEROKU_API_URL: platform.url,
      HEROKU_ID_URL: platform.url,
      ADDON_CLIENT_SECRET: 's',
    });

    const provisioned = await provisionHa(system, platform);
    uuid = provisioned.uuid;
    const url = provisioned.config.PGFLEET_URL!;

    const { rows } = await db.pool.query<{ id: string; port: number; role: string; health_port: string }>(
      `select s.id, s.port, rs.role, s.attrs->'health_port' as health_port
       from resource_servers rs join servers s on s.id = rs.server_id where rs.resource_id = $1`,
      [uuid],
    );
    const member = (role: string): Member => {
      const r = rows.find((row) => row.role === role)!;
      expect(Number(r.health_port)).toBeGreaterThan(0);
      return { id: r.id, port: r.port, health: `http://127.0.0.1:${r.health_port}` };
    };
    primary = member('primary');
    standby = member('standby');

    // Patroni's documented HAProxy config, with one server line per server of the resource.
    const [primaryPort, replicasPort] = [await freePort(), await freePort()];
    const servers = [primary, standby]
      .map((s) => `    server pg_${s.port} 127.0.0.1:${s.port} maxconn 100 check port ${new URL(s.health).port}`)
      .join('\n');
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-haproxy-'));
    const cfg = path.join(dir, 'haproxy.cfg');
    await fs.writeFile(
      cfg,
      `global
    maxconn 100
    stats socket ${path.join(dir, 'admin.sock')} mode 600 level user

defaults
    mode tcp
    retries 2
    timeout client 30m
    timeout connect 4s
    timeout server 30m
    timeout check 5s

listen primary
    bind 127.0.0.1:${primaryPort}
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 200ms fall 2 rise 1 on-marked-down shutdown-sessions
${servers}

listen replicas
    bind 127.0.0.1:${replicasPort}
    balance roundrobin
    option httpchk OPTIONS /replica?lag=16MB
    http-check expect status 200
    default-server inter 200ms fall 2 rise 1 on-marked-down shutdown-sessions
${servers}
`,
    );
    await run('haproxy', ['-c', '-f', cfg]);
    haproxy = spawn('haproxy', ['-f', cfg, '-db'], { stdio: ['ignore', 'ignore', 'pipe'] });
    haproxy.stderr!.on('data', (d: Buffer) => (haproxyStderr += d.toString()));

    const through = (port: number) => {
      const u = new URL(url);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    };
    writeUrl = through(primaryPort);
    readUrl = through(replicasPort);
  });

  afterAll(async () => {
    if (haproxy?.pid !== undefined && haproxy.exitCode === null && haproxy.signalCode === null) {
      const exited = once(haproxy, 'exit');
      process.kill(haproxy.pid, 'SIGTERM');
      await exited;
    }
    await system?.stop();
    await platform.stop();
    await db?.drop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  /** HAProxy's own view of each server per frontend (`primary/pg_5433` → `UP`), from its stats socket. */
  async function haproxyView(): Promise<Record<string, string>> {
    const socket = net.connect(path.join(dir, 'admin.sock'));
    socket.end('show stat\n');
    let csv = '';
    for await (const chunk of socket) csv += String(chunk);
    const [header, ...lines] = csv.trim().split('\n');
    const cols = header!.replace(/^# /, '').split(',');
    const view: Record<string, string> = {};
    for (const line of lines) {
      const row = Object.fromEntries(line.split(',').map((v, i) => [cols[i], v]));
      if (row.svname?.startsWith('pg_')) view[`${row.pxname}/${row.svname}`] = row.status!;
    }
    return view;
  }

  /** Wait until HAProxy's checks have settled on `expected` (server states are UP at its start, until checks fail). */
  async function settled(expected: Record<string, string>): Promise<void> {
    let last: Record<string, string> = {};
    try {
      await waitFor(
        'HAProxy to settle',
        async () => {
          if (haproxy?.exitCode !== null) throw new Error(`haproxy exited: ${haproxyStderr}`);
          last = await haproxyView().catch(() => ({}));
          return Object.entries(expected).every(([k, v]) => last[k] === v);
        },
        30_000,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}: expected ${JSON.stringify(expected)}, HAProxy shows ${JSON.stringify(last)}`);
    }
  }

  /** psql through a frontend once HAProxy sends it somewhere; fails if HAProxy died. */
  async function reached(url: string, sql: string, expected: string): Promise<string> {
    return waitFor(
      `HAProxy to route to ${expected}`,
      async () => {
        if (haproxy?.exitCode !== null) throw new Error(`haproxy exited: ${haproxyStderr}`);
        const got = await psql(url, sql).catch(() => undefined);
        return got === expected ? got : undefined;
      },
      30_000,
    );
  }

  async function codes(member: Member, paths: string[], method = 'OPTIONS'): Promise<Record<string, number>> {
    const answers = await Promise.all(paths.map(async (p) => [p, (await fetch(`${member.health}${p}`, { method })).status] as const));
    return Object.fromEntries(answers);
  }

  const CHECKS = ['/primary', '/master', '/leader', '/read-write', '/', '/replica', '/replica?lag=16MB', '/read-only', '/health'];

  it('routes writes to the primary and reads to the standby', async () => {
    const [p, s] = [`pg_${primary.port}`, `pg_${standby.port}`];
    await settled({ [`primary/${p}`]: 'UP', [`primary/${s}`]: 'DOWN', [`replicas/${p}`]: 'DOWN', [`replicas/${s}`]: 'UP' });
    expect(await psql(writeUrl, 'select inet_server_port(), pg_is_in_recovery()')).toBe(`${primary.port}|f`);
    await psql(writeUrl, 'create table kept (n int)');
    await psql(writeUrl, 'insert into kept select generate_series(1, 100)');
    expect(await psql(readUrl, 'select inet_server_port(), pg_is_in_recovery()')).toBe(`${standby.port}|t`);
    // Synchronous: the row is on the standby by the time the commit returns, though replay may trail.
    expect(await reached(readUrl, 'select count(*) from kept', '100')).toBe('100');
    await expect(psql(readUrl, 'insert into kept values (0)')).rejects.toThrow(/read-only transaction/);
  });

  it("answers like Patroni's REST API on each server's health port", async () => {
    expect(await codes(primary, CHECKS)).toEqual({
      '/primary': 200,
      '/master': 200,
      '/leader': 200,
      '/read-write': 200,
      '/': 200,
      '/replica': 503,
      '/replica?lag=16MB': 503,
      '/read-only': 200,
      '/health': 200,
    });
    expect(await codes(standby, CHECKS)).toEqual({
      '/primary': 503,
      '/master': 503,
      '/leader': 503,
      '/read-write': 503,
      '/': 503,
      '/replica': 200,
      '/replica?lag=16MB': 200,
      '/read-only': 200,
      '/health': 200,
    });
    expect(await codes(primary, ['/primary', '/replica'], 'HEAD')).toEqual({ '/primary': 200, '/replica': 503 });
    expect(await codes(standby, ['/nothing-here', '/replica?lag=lots'], 'GET')).toEqual({ '/nothing-here': 404, '/replica?lag=lots': 400 });
    expect((await fetch(`${primary.health}/primary`, { method: 'POST' })).status).toBe(405);

    const options = await fetch(`${primary.health}/primary`, { method: 'OPTIONS' });
    expect(await options.text()).toBe('');
    const asPrimary = await (await fetch(`${primary.health}/primary`)).json();
    expect(asPrimary).toMatchObject({
      state: 'running',
      role: 'primary',
      timeline: 1,
      pgfleet: { server_id: primary.id, machine_state: 'available' },
    });
    expect(asPrimary.server_version).toBeGreaterThanOrEqual(130000);
    expect(asPrimary.xlog.location).toBeGreaterThan(0);
    const asReplica = await fetch(`${standby.health}/replica`);
    expect(asReplica.headers.get('content-type')).toBe('application/json');
    const body = await asReplica.json();
    expect(body).toMatchObject({ state: 'running', role: 'replica', xlog: { paused: false }, pgfleet: { server_id: standby.id } });
    expect(body.xlog.replayed_location).toBeGreaterThan(0);
    expect(body.lag).toBeGreaterThanOrEqual(0);
    // The standby asked /primary: a 503 with the same body, so whoever looks sees why.
    const refused = await fetch(`${standby.health}/primary`);
    expect(refused.status).toBe(503);
    expect((await refused.json()).role).toBe('replica');
  });

  it('takes a replica that lags past the bound out of the read pool, and puts it back once it catches up', async () => {
    const standbyAdmin = await adminUrl(db.pool, standby.id);
    const primaryAdmin = await adminUrl(db.pool, primary.id);
    await psql(standbyAdmin, 'select pg_wal_replay_pause()');
    try {
      // The standby still receives (commits stay synchronous) but replays nothing: two WAL
      // switches with a write before each put the primary more than one 16 MB segment ahead.
      for (let i = 0; i < 2; i++) {
        await psql(writeUrl, 'insert into kept values (1000)');
        await psql(primaryAdmin, 'select pg_switch_wal()');
      }
      expect(await codes(standby, ['/replica?lag=0', '/replica?lag=16MB', '/replica?lag=1GB', '/replica', '/read-only?lag=16MB'])).toEqual({
        '/replica?lag=0': 503,
        '/replica?lag=16MB': 503,
        '/replica?lag=1GB': 200,
        '/replica': 200,
        '/read-only?lag=16MB': 503,
      });
      const body = await (await fetch(`${standby.health}/replica?lag=16MB`)).json();
      expect(body.xlog.paused).toBe(true);
      expect(body.lag).toBeGreaterThan(16 * 1024 ** 2);
      await settled({ [`replicas/pg_${standby.port}`]: 'DOWN' });
      await expect(psql(readUrl, 'select 1')).rejects.toThrow(/server closed the connection/);
    } finally {
      await psql(standbyAdmin, 'select pg_wal_replay_resume()');
    }
    await settled({ [`replicas/pg_${standby.port}`]: 'UP' });
    expect(await psql(readUrl, 'select count(*) from kept')).toBe('102');
    expect(await codes(standby, ['/replica?lag=16MB'])).toEqual({ '/replica?lag=16MB': 200 });
  });

  it('answers 503 within about a second when Postgres hangs, instead of holding the check', async () => {
    // Freeze the standby, its postmaster and every backend (the health probe's own too).
    const pids = await clusterPids(path.join(system.config.home, 'servers', standby.id, 'data'));
    const signal = (sig: NodeJS.Signals) => signalAll(pids, sig);
    const answers: { status: number; ms: number }[] = [];
    signal('SIGSTOP');
    try {
      // The kept connection's query times out first; then a new connection cannot log in.
      for (let i = 0; i < 2; i++) {
        const started = performance.now();
        const { status } = await fetch(`${standby.health}/health`);
        answers.push({ status, ms: performance.now() - started });
      }
    } finally {
      signal('SIGCONT');
    }
    for (const a of answers) {
      expect(a.status).toBe(503);
      expect(a.ms).toBeLessThan(2500);
    }
    await waitFor('the standby to answer again', async () => (await fetch(`${standby.health}/replica`)).status === 200);
    await waitFor('its machine to be available again', async () => {
      const r = (await system.api('GET', `/api/resources/${uuid}`)).body;
      return r.servers.some((s: { id: string; state: string }) => s.id === standby.id && s.state === 'available');
    });
    await settled({ [`replicas/pg_${standby.port}`]: 'UP' });
  });

  it('follows a switchover: the primary frontend reaches the promoted standby, with every row', async () => {
    // Sample both servers' /primary together until the switchover is done: never two primaries.
    const sample = async () =>
      (await Promise.all([primary, standby].map(async (s) => (await fetch(`${s.health}/primary`, { method: 'OPTIONS' })).status))).join(
        '/',
      );
    expect(await sample()).toBe('200/503');
    const both: string[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        both.push(await sample());
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    try {
      expect((await system.api('POST', `/api/resources/${uuid}/promote`)).status).toBe(202);
      // Promoted: the roles have swapped in the control database (the old primary may still be rejoining as a standby).
      await waitFor(
        'the switchover',
        async () => {
          const r = (await system.api('GET', `/api/resources/${uuid}`)).body;
          return r.servers.some(
            (s: { id: string; role: string; state: string }) => s.id === standby.id && s.role === 'primary' && s.state === 'available',
          );
        },
        90_000,
      );
      await settled({ [`primary/pg_${standby.port}`]: 'UP', [`primary/pg_${primary.port}`]: 'DOWN' });
      expect(await psql(writeUrl, 'select inet_server_port(), pg_is_in_recovery()')).toBe(`${standby.port}|f`);
    } finally {
      sampling = false;
      await sampler;
    }
    expect(await sample()).toBe('503/200');
    expect(both).not.toContain('200/200');

    expect(await psql(writeUrl, 'select count(*) from kept')).toBe('102');
    await psql(writeUrl, 'insert into kept values (2000)');
    expect(await psql(writeUrl, 'select count(*) from kept')).toBe('103');
    expect(await codes(standby, ['/primary', '/replica', '/read-only'])).toEqual({ '/primary': 200, '/replica': 503, '/read-only': 200 });
    expect((await codes(primary, ['/primary']))['/primary']).toBe(503);
  }, 120_000);
});
