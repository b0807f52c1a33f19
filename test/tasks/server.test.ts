import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { observePooler } from '../../observers/pgbouncer.ts';
import { transaction } from '../../src/db.ts';
import { localServerFiles } from '../../src/hosts/local.ts';
import { poolerStatus, stopPooler } from '../../src/pg/pgbouncer.ts';
import type { ServerRecord } from '../../src/providers/provider.ts';
import { insertServer, loadServerRecord } from '../../src/servers/rows.ts';
import { superuserClient } from '../support/providers.ts';
import { TEST_SEALER } from '../support/system.ts';
import { asked, lastTransition, observeNow, runTask, stateOf, tell, useTaskBench } from '../support/tasks.ts';

/**
 * Each task of the server machine, run as a worker runs it against a real Postgres of the
 * local provider: the event its report gives the machine, where that takes the machine, and
 * what the task did to the server. One server lives through the file's tests in order, as
 * one would in production; a second one is the one that cannot start.
 */
describe('the server tasks, on a real server', { timeout: 120_000 }, () => {
  const bench = useTaskBench({ pooler: true });
  let id: string;

  const record = async (serverId = id): Promise<ServerRecord> => (await loadServerRecord(bench.pool, TEST_SEALER, serverId))!;

  async function answers(server: ServerRecord): Promise<boolean> {
    const client = superuserClient(server, { connectionTimeoutMillis: 3000 });
    try {
      await client.connect();
      await client.query('select 1');
      return true;
    } catch {
      return false;
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /** Its pooler's admin console answers, as the observers ask it. */
  async function poolAnswers(server: ServerRecord): Promise<boolean> {
    const seen = await observePooler(server.host!, Number(server.attrs.pool_port), server.superuserPassword);
    return seen.pool_reachable === 'true';
  }

  async function startedAt(server: ServerRecord): Promise<string> {
    const client = superuserClient(server);
    await client.connect();
    try {
      return (await client.query<{ at: string }>('select pg_postmaster_start_time()::text as at')).rows[0]!.at;
    } finally {
      await client.end();
    }
  }

  const observe = (serverId = id) => observeNow(bench, serverId);

  /** A new server's row and machine, as placement makes them. */
  const newServer = () =>
    transaction(bench.pool, (client) => insertServer(client, TEST_SEALER, 'local', { tenancy: 'dedicated', region: 'us-east-1' }));

  /** Something else listening on the server's port, so its Postgres cannot start; `close` gives the port back. */
  async function takePort(server: ServerRecord): Promise<{ close(): Promise<void> }> {
    const squatter = net.createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => squatter.listen(server.port!, server.host!, resolve));
    return { close: () => new Promise<void>((resolve) => squatter.close(() => resolve())) };
  }

  beforeAll(async () => {
    id = await newServer();
  });

  it('provision: places the server and reports `provisioned`', async () => {
    expect(await asked(bench, 'provision', id)).toBe(true);
    await runTask(bench, 'provision', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'provisioned', from: 'provisioning', to: 'initializing', byJob: true });
    const server = await record();
    expect(server.host).toBe('127.0.0.1');
    expect(server.port).toBeGreaterThan(0);
    expect(server.attrs.pool_port).toMatch(/^\d+$/);
  });

  it('initialize: makes its data directory and reports `initialized`', async () => {
    await runTask(bench, 'initialize', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'initialized', from: 'initializing', to: 'starting.running' });
    expect(existsSync(path.join(bench.local.dataDir({ id }), 'PG_VERSION'))).toBe(true);
    expect(await answers(await record())).toBe(false);
  });

  it('start: starts Postgres and its pooler and reports `started`', async () => {
    await runTask(bench, 'start', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'started', from: 'starting.running', to: 'starting.verifying' });
    const server = await record();
    expect(await answers(server)).toBe(true);
    expect(await poolAnswers(server)).toBe(true);
  });

  it('observe and tick: what the observers saw takes the started server to `available`', async () => {
    expect(await asked(bench, 'observe', id)).toBe(true);
    await observe();
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'observed', from: 'starting.verifying', to: 'available' });
    const { rows } = await bench.pool.query<{ reachable: string }>(
      `select last_observation->'reachable' as reachable from servers where id = $1`,
      [id],
    );
    expect(rows[0]!.reachable).toBe('true');
  });

  it('restart_pool: starts the pooler an observation found dead, and tells the machine nothing', async () => {
    const server = await record();
    const poolDir = localServerFiles(path.dirname(bench.local.dataDir(server))).poolDir;
    await stopPooler(poolDir, 'kill');
    const before = await lastTransition(bench, id);
    await observe();
    expect(await poolAnswers(server)).toBe(false);
    expect(await asked(bench, 'restart_pool', id)).toBe(true);
    await runTask(bench, 'restart_pool', { entity: id });
    expect((await poolerStatus(poolDir)).running).toBe(true);
    expect(await poolAnswers(server)).toBe(true);
    expect(await lastTransition(bench, id)).toEqual(before);
    expect(await stateOf(bench, id)).toBe('available');
  });

  it('maintain: stops and starts Postgres on purpose and reports `restarted`', async () => {
    const server = await record();
    const was = await startedAt(server);
    await tell(bench, id, { type: 'maintain' });
    await runTask(bench, 'maintain', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'restarted', from: 'maintaining.running', to: 'maintaining.verifying' });
    expect(await startedAt(server)).not.toBe(was);
    await observe();
    expect(await stateOf(bench, id)).toBe('available');
  });

  it('restart: brings back a Postgres whose process the observers found dead, and reports `restarted`', async () => {
    const server = await record();
    await bench.local.host(server).kill();
    await observe();
    expect(await stateOf(bench, id)).toBe('unreachable');
    await observe();
    expect(await stateOf(bench, id)).toBe('restarting.running');
    await runTask(bench, 'restart', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'restarted', from: 'restarting.running', to: 'restarting.verifying' });
    expect(await answers(server)).toBe(true);
    await observe();
    expect(await stateOf(bench, id)).toBe('available');
  });

  it('fence: stops the server hard for good and reports `fenced`', async () => {
    await tell(bench, id, { type: 'fence' });
    await runTask(bench, 'fence', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'fenced', from: 'fencing', to: 'fenced' });
    const server = await record();
    expect(await answers(server)).toBe(false);
    expect((await bench.local.host(server).observe()).alive).toBe('false');
  });

  it('destroy: removes the server and everything it had, and reports `destroyed`', async () => {
    await tell(bench, id, { type: 'delete' });
    await runTask(bench, 'destroy', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'destroyed', from: 'deleting', to: 'deleted' });
    expect(existsSync(bench.local.dataDir({ id }))).toBe(false);
  });

  it('start and restart report `start.failed` and `restart.failed` when Postgres cannot start, and `restarted` once it can', async () => {
    const other = await newServer();
    await runTask(bench, 'provision', { entity: other });
    await runTask(bench, 'initialize', { entity: other });
    const server = await record(other);
    const port = await takePort(server);
    try {
      await runTask(bench, 'start', { entity: other });
      const failed = await lastTransition(bench, other);
      expect(failed).toMatchObject({ event: 'start.failed', from: 'starting.running', to: 'failed.waiting' });
      expect(failed.data?.error).toEqual(expect.any(String));
      expect(await answers(server)).toBe(false);

      await runTask(bench, 'restart', { entity: other });
      expect(await lastTransition(bench, other)).toMatchObject({ event: 'restart.failed', from: 'failed.waiting', to: 'failed.waiting' });
    } finally {
      await port.close();
    }
    await runTask(bench, 'restart', { entity: other });
    expect(await lastTransition(bench, other)).toMatchObject({ event: 'restarted', from: 'failed.waiting', to: 'failed.verifying' });
    expect(await answers(server)).toBe(true);
  });
});
