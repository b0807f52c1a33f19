import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { observePostgres } from '../../observers/postgres.ts';
import type { ServerRecord } from '../../src/providers/provider.ts';
import { lsnBytes } from '../../src/wal/segments.ts';
import { archivedServers, type ArchivedServers } from '../support/archived.ts';
import { waitFor } from '../support/db.ts';

const SEGMENT = 16 * 1024 * 1024;

/**
 * The archive lag a primary reports, on a real server that archives. The chaos run of issue
 * 11 paged "archive lagging" after every crash of a primary: a crash resets pg_stat_archiver,
 * and a lag read from its last archived file was then the whole WAL position.
 */
describe('the observed archive lag', { timeout: 120_000 }, () => {
  let s: ArchivedServers;
  let server: ServerRecord;
  const observe = () => observePostgres({ host: server.host!, port: server.port!, password: server.superuserPassword });
  const archived = async () => Number((await s.query(server, 'select archived_count as n from pg_stat_archiver')).rows[0].n);

  beforeAll(async () => {
    s = await archivedServers();
    server = await s.server();
    await s.query(server, 'create table t (n int)');
    for (let i = 0; i < 4; i++) await s.query(server, 'insert into t select generate_series(1, 1000); select pg_switch_wal()');
    await waitFor('four segments archived', async () => (await archived()) >= 4, 30_000);
  });
  afterAll(async () => s?.cleanup());

  it('is within a segment of the server when everything finished is archived', async () => {
    const obs = await observe();
    expect(Number(obs.archive_lag_bytes)).toBeLessThan(SEGMENT);
  });

  it('stays so after a crash, which forgets what the archiver did', async () => {
    await s.provider.host(server).stop('kill');
    await s.provider.host(server).start();
    const obs = await observe();
    expect(obs.archiver_last_archived_wal).toBeUndefined();
    expect(lsnBytes(obs.current_lsn)).toBeGreaterThan(4 * SEGMENT);
    expect(Number(obs.archive_lag_bytes)).toBeLessThan(SEGMENT);
  });

  it('counts what is waiting to be archived', async () => {
    await s.query(server, "alter system set archive_command = 'false'");
    await s.query(server, 'select pg_reload_conf()');
    for (let i = 0; i < 3; i++) await s.query(server, 'insert into t select generate_series(1, 1000); select pg_switch_wal()');
    const obs = await observe();
    expect(Number(obs.archive_lag_bytes)).toBeGreaterThanOrEqual(3 * SEGMENT);
    expect(Number(obs.archive_lag_bytes)).toBeLessThan(4 * SEGMENT);
  });
});
