import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServerRecord } from '../../src/providers/provider.ts';
import { takeBaseBackup } from '../../src/wal/backup.ts';
import { archivedServers, type ArchivedServers } from '../support/archived.ts';
import { waitFor } from '../support/db.ts';

/**
 * A former primary brought back as a standby of the server that took over, by the local
 * provider, whatever an earlier attempt left: the chaos run of issue 11 lost the rejoin for
 * good when the new primary was down for a moment during it.
 */
describe('a former primary rejoining', { timeout: 240_000 }, () => {
  let s: ArchivedServers;
  let a: ServerRecord;
  let b: ServerRecord;
  const dataDir = (server: ServerRecord) => s.provider.dataDir(server);
  const count = async (server: ServerRecord) => Number((await s.query(server, 'select count(*) as n from t')).rows[0].n);
  const inRecovery = async (server: ServerRecord) => (await s.query(server, 'select pg_is_in_recovery() as r')).rows[0].r as boolean;
  const backupOf = (server: ServerRecord, label: string) =>
    takeBaseBackup(s.bin, s.store, `servers/${server.id}`, { host: server.host!, port: server.port!, password: server.superuserPassword }, label);

  beforeAll(async () => {
    s = await archivedServers();
    a = await s.server();
    await s.query(a, 'create table t (n int)');
    await s.query(a, 'insert into t select generate_series(1, 100)');
    await backupOf(a, 'a-1');
    b = await s.server({ follows: a.id, backup_label: 'a-1' }, a);
    await waitFor('the standby to have the rows', async () => (await count(b)) === 100, 30_000);
    // The failover: a is killed, b promoted and written to.
    await s.provider.stop(a, 'kill');
    await s.query(b, 'select pg_promote()');
    await waitFor('the promotion', async () => !(await inRecovery(b)), 30_000);
    await s.query(b, 'insert into t select generate_series(101, 200)');
    Object.assign(a, { attrs: { ...a.attrs, follows: b.id }, leader: { host: b.host!, port: b.port! } });
  });
  afterAll(async () => {
    await s?.cleanup();
  });

  it('leaves the data in place when the new primary is down as the rewind begins, and rewinds once it is back', async () => {
    await s.provider.stop(b, 'kill');
    const started = performance.now();
    await expect(s.provider.rejoin(a)).rejects.toThrow(/pg_rewind could not reach/);
    expect(performance.now() - started).toBeLessThan(15_000);
    expect(existsSync(path.join(dataDir(a), 'PG_VERSION'))).toBe(true);
    expect(existsSync(`${dataDir(a)}.diverged`)).toBe(false);

    await s.provider.start(b);
    expect(await s.provider.rejoin(a)).toEqual({ how: 'rewound' });
    expect(await inRecovery(a)).toBe(true);
    await waitFor('the rewound standby to have every row', async () => (await count(a)) === 200, 30_000);
  });

  it('rebuilds a server whose data an earlier attempt set aside, without waiting for a backup that is not there', async () => {
    await s.provider.stop(a, 'kill');
    await fs.rename(dataDir(a), `${dataDir(a)}.diverged`);
    await fs.writeFile(path.join(`${dataDir(a)}.diverged`, 'kept-for-an-operator'), '');
    a.attrs.backup_label = 'b-1';
    const started = performance.now();
    await expect(s.provider.rejoin(a)).rejects.toThrow(/the backup b-1 of the leader .* is not finished/);
    expect(performance.now() - started).toBeLessThan(5_000);

    await backupOf(b, 'b-1');
    await s.query(b, 'insert into t select generate_series(201, 300)');
    expect(await s.provider.rejoin(a)).toEqual({ how: 'rebuilt', because: 'no data directory to rewind' });
    await waitFor('the rebuilt standby to have every row', async () => (await count(a)) === 300, 30_000);
  });

  it('starts a standby an earlier attempt made, keeping the diverged data aside', async () => {
    // The worker died after the rebuild started the standby and before it reported: the
    // next attempt finds a standby (killed here, as the attempt's first step does).
    await s.provider.stop(a, 'kill');
    expect(await s.provider.rejoin(a)).toEqual({ how: 'started' });
    expect(existsSync(path.join(`${dataDir(a)}.diverged`, 'kept-for-an-operator'))).toBe(true);
    await s.query(b, 'insert into t select generate_series(301, 400)');
    await waitFor('the standby to have every row', async () => (await count(a)) === 400, 30_000);
    expect(await inRecovery(a)).toBe(true);
  });
});
