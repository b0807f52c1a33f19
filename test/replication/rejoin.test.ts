import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServerRecord } from '../../src/providers/provider.ts';
import { rejoinAsStandby } from '../../src/replication/rejoin.ts';
import { takeBaseBackup } from '../../src/wal/backup.ts';
import { archivedServers, type ArchivedServers } from '../support/archived.ts';
import { waitFor } from '../support/db.ts';

/** The rejoin step, on the server's local host. */
const rejoin = (s: ArchivedServers, server: ServerRecord) => rejoinAsStandby(s.provider.host(server), server, s.archive);

/**
 * A former primary brought back as a standby of the server that took over, on a local host,
 * whatever an earlier attempt left: the chaos run of issue 11 lost the rejoin for good when
 * the new primary was down for a moment during it.
 */
describe('a former primary rejoining', { timeout: 240_000 }, () => {
  let s: ArchivedServers;
  let a: ServerRecord;
  let b: ServerRecord;
  const dataDir = (server: ServerRecord) => s.provider.dataDir(server);
  const count = async (server: ServerRecord) => Number((await s.query(server, 'select count(*) as n from t')).rows[0].n);
  const inRecovery = async (server: ServerRecord) => (await s.query(server, 'select pg_is_in_recovery() as r')).rows[0].r as boolean;
  const backupOf = (server: ServerRecord, label: string) =>
    takeBaseBackup(
      s.bin,
      s.store,
      `servers/${server.id}`,
      { host: server.host!, port: server.port!, password: server.superuserPassword },
      label,
    );

  beforeAll(async () => {
    s = await archivedServers();
    a = await s.server();
    await s.query(a, 'create table t (n int)');
    await s.query(a, 'insert into t select generate_series(1, 100)');
    await backupOf(a, 'a-1');
    b = await s.server({ follows: a.id, backup_label: 'a-1' }, a);
    await waitFor('the standby to have the rows', async () => (await count(b)) === 100, 30_000);
    // The failover: a is killed, b promoted and written to.
    await s.provider.host(a).stop('kill');
    await s.query(b, 'select pg_promote()');
    await waitFor('the promotion', async () => !(await inRecovery(b)), 30_000);
    await s.query(b, 'insert into t select generate_series(101, 200)');
    Object.assign(a, { attrs: { ...a.attrs, follows: b.id }, leader: { host: b.host!, port: b.port! } });
  });
  afterAll(async () => {
    await s?.cleanup();
  });

  it('leaves the data in place when the new primary is down as the rewind begins, and rewinds once it is back', async () => {
    await s.provider.host(b).stop('kill');
    const started = performance.now();
    await expect(rejoin(s, a)).rejects.toThrow(/pg_rewind could not reach/);
    expect(performance.now() - started).toBeLessThan(15_000);
    expect(existsSync(path.join(dataDir(a), 'PG_VERSION'))).toBe(true);
    expect(existsSync(`${dataDir(a)}.diverged`)).toBe(false);

    await s.provider.host(b).start();
    expect(await rejoin(s, a)).toEqual({ how: 'rewound' });
    expect(await inRecovery(a)).toBe(true);
    await waitFor('the rewound standby to have every row', async () => (await count(a)) === 200, 30_000);
  });

  it('rebuilds a server whose data an earlier attempt set aside, without waiting for a backup that is not there', async () => {
    await s.provider.host(a).stop('kill');
    await fs.rename(dataDir(a), `${dataDir(a)}.diverged`);
    await fs.writeFile(path.join(`${dataDir(a)}.diverged`, 'kept-for-an-operator'), '');
    a.attrs.backup_label = 'b-1';
    const started = performance.now();
    await expect(rejoin(s, a)).rejects.toThrow(/the backup b-1 of the leader .* is not finished/);
    expect(performance.now() - started).toBeLessThan(5_000);

    await backupOf(b, 'b-1');
    await s.query(b, 'insert into t select generate_series(201, 300)');
    expect(await rejoin(s, a)).toEqual({ how: 'rebuilt', because: 'no data directory to rewind' });
    await waitFor('the rebuilt standby to have every row', async () => (await count(a)) === 300, 30_000);
  });

  it('starts a standby an earlier attempt made, keeping the diverged data aside', async () => {
    // The worker died after the rebuild started the standby and before it reported: the
    // next attempt finds a standby (killed here, as the attempt's first step does).
    await s.provider.host(a).stop('kill');
    expect(await rejoin(s, a)).toEqual({ how: 'started' });
    expect(existsSync(path.join(`${dataDir(a)}.diverged`, 'kept-for-an-operator'))).toBe(true);
    await s.query(b, 'insert into t select generate_series(301, 400)');
    await waitFor('the standby to have every row', async () => (await count(a)) === 400, 30_000);
    expect(await inRecovery(a)).toBe(true);
  });

  it('rebuilds a standby an earlier attempt made that cannot start, keeping the diverged data aside', async () => {
    await s.provider.host(a).stop('kill');
    await fs.appendFile(path.join(dataDir(a), 'postgresql.auto.conf'), "\nshared_buffers = 'not a size'\n");
    const rejoined = await rejoin(s, a);
    expect(rejoined).toMatchObject({ how: 'rebuilt', because: expect.stringMatching(/the standby an earlier attempt made did not start/) });
    expect(existsSync(path.join(`${dataDir(a)}.diverged`, 'kept-for-an-operator'))).toBe(true);
    await s.query(b, 'insert into t select generate_series(401, 500)');
    await waitFor('the rebuilt standby to have every row', async () => (await count(a)) === 500, 30_000);
  });
});

describe('a former primary rejoining at once', { timeout: 240_000 }, () => {
  let s: ArchivedServers;
  afterAll(async () => {
    await s?.cleanup();
  });

  it('is rewound onto the new timeline though the new primary has not checkpointed since its promotion', async () => {
    // pg_rewind reads the source's timeline from its control file, which a promotion updates
    // only at its next checkpoint: before it, "no rewind required", and the old primary,
    // started as a standby, could never read its own checkpoint on the new timeline.
    s = await archivedServers();
    const a = await s.server();
    await s.query(a, 'create table t (n int)');
    await s.query(a, 'insert into t select generate_series(1, 100)');
    await takeBaseBackup(s.bin, s.store, `servers/${a.id}`, { host: a.host!, port: a.port!, password: a.superuserPassword }, 'a-1');
    const b = await s.server({ follows: a.id, backup_label: 'a-1' }, a);
    const count = async (server: ServerRecord) => Number((await s.query(server, 'select count(*) as n from t')).rows[0].n);
    await s.query(b, `alter system set checkpoint_timeout = '1h'`);
    await s.query(b, 'select pg_reload_conf()');
    // Pages the standby dirties replaying them: the checkpoint its promotion asks for is
    // spread over the checkpoint timeout, as on a busy server.
    await s.query(a, 'insert into t select generate_series(101, 300000)');
    await waitFor('the standby to have the rows', async () => (await count(b)) === 300_000, 60_000);
    // The old primary writes what the standby never gets: their histories part.
    await s.query(b, `alter system set primary_conninfo = ''`);
    await s.query(b, 'select pg_reload_conf()');
    await waitFor(
      'the standby to stop streaming',
      async () => (await s.query(a, 'select count(*) as n from pg_stat_replication')).rows[0].n === '0',
      30_000,
    );
    await s.query(a, 'insert into t select generate_series(1001, 1010)');
    await s.provider.host(a).stop('kill');
    await s.query(b, 'select pg_promote(true, 60)');
    await s.query(b, 'insert into t select generate_series(300001, 300100)');
    Object.assign(a, { attrs: { ...a.attrs, follows: b.id }, leader: { host: b.host!, port: b.port! } });

    expect(await rejoin(s, a)).toEqual({ how: 'rewound' });
    await waitFor('the rewound standby to have every row of the new primary', async () => (await count(a)) === 300_100, 30_000);
  });
});
