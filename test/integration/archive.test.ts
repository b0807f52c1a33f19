import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/open.ts';
import { walKey } from '../../src/wal/archive.ts';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.ts';
import { startS3 } from '../support/s3.ts';
import { adminUrl, psql, startSystem, type System } from '../support/system.ts';

const run = promisify(execFile);
const BIN = path.resolve('bin/pgfleet.js');

/** A server archiving to `store`, written to until a segment is archived; the segment's name and bytes. */
async function archivedSegment(system: System, db: TestDatabase) {
  const id = (await system.api('POST', '/api/servers', { provider: 'local' })).body.id as string;
  await waitFor('the server to be available', async () => (await system.api('GET', `/api/servers/${id}`)).body.state === 'available');
  const admin = await adminUrl(db.pool, id);
  expect(await psql(admin, 'show archive_mode')).toBe('on');
  await psql(admin, 'create table t as select generate_series(1, 10000) as n');
  const name = await psql(admin, 'select pg_walfile_name(pg_current_wal_lsn())');
  const dataDir = path.join(system.config.home, 'servers', id, 'data');
  await psql(admin, 'select pg_switch_wal()');
  await waitFor(
    'the segment to be archived',
    async () => (await psql(admin, 'select last_archived_wal from pg_stat_archiver')) >= name,
    30_000,
  );
  const bytes = await readFile(path.join(dataDir, 'pg_wal', name));
  return { id, name, bytes, admin, config: path.join(system.config.home, 'servers', id, 'archive.json') };
}

for (const kind of ['directory', 's3'] as const) {
  describe(`Postgres archives every WAL segment through pgfleet, into a ${kind} store`, () => {
    let db: TestDatabase;
    let system: System;
    let s3: Awaited<ReturnType<typeof startS3>> | undefined;

    beforeAll(async () => {
      db = await createTestDatabase();
      s3 = kind === 's3' ? await startS3() : undefined;
      system = await startSystem(db.url, ['web', 'worker', 'clock'], s3 ? { PGFLEET_STORE_URL: s3.storeUrl('fleet'), ...s3.env } : {});
    });
    afterAll(async () => {
      await system?.stop();
      await s3?.stop();
      await db?.drop();
    });

    it('pushes each segment with archive_command and fetches it back byte-identical with wal-fetch', async () => {
      const { id, name, bytes, config } = await archivedSegment(system, db);
      const store = openStore(JSON.parse(await readFile(config, 'utf8')).store, { ...process.env, ...(s3?.env ?? {}) });
      const object = await store.head(walKey(`servers/${id}`, name));
      expect(object?.metadata).toMatchObject({ compression: 'gzip', size: String(16 * 1024 * 1024) });

      const dest = path.join(system.config.home, `restored-${name}`);
      await run(process.execPath, [BIN, 'wal-fetch', name, dest, '--config', config]);
      expect((await readFile(dest)).equals(bytes)).toBe(true);
      // A segment the archive does not have is exit 1: the end of the archive, not an error.
      const missing = await run(process.execPath, [BIN, 'wal-fetch', 'FFFFFFFF0000000000000001', dest, '--config', config]).catch(
        (e: { code: number }) => e,
      );
      expect(missing).toMatchObject({ code: 1 });
      // The observer sees the archiver working.
      await waitFor('an observation of the archiver', async () => {
        const obs = (await system.api('GET', `/api/servers/${id}`)).body.observation as Record<string, string>;
        return Number(obs.archiver_archived_count) >= 1 && obs.archiver_failing === 'false';
      });
    });
  });
}
