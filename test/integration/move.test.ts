import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPgBinaries } from '../../src/pg/binaries.ts';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.ts';
import { addonFetch, psql, startSystem, type System } from '../support/system.ts';

/**
 * A plan move stops the tenant's writes, copies its database and lets it in on the new
 * server. When the copy fails, the step retries with backoff; meanwhile the tenant must be
 * able to log in where its data is. Here the real pg_restore fails while a flag file exists.
 */
describe('a plan move whose copy fails', () => {
  let db: TestDatabase;
  let system: System;
  let bin: string;
  const failFlag = () => path.join(bin, 'fail-restores');

  beforeAll(async () => {
    const real = findPgBinaries(process.env.PG_BIN);
    if (!real.pgRestore) throw new Error(`moving needs pg_restore next to ${real.dir}: run scripts/test-prerequisites.sh`);
    bin = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-bin-'));
    await fs.chmod(bin, 0o755);
    for (const name of await fs.readdir(real.dir))
      if (name !== 'pg_restore') await fs.symlink(path.join(real.dir, name), path.join(bin, name));
    await fs.writeFile(
      path.join(bin, 'pg_restore'),
      `#!/bin/sh\nif [ -e ${JSON.stringify(failFlag())} ]; then echo "pg_restore: injected failure" >&2; exit 1; fi\n` +
        `exec ${JSON.stringify(real.pgRestore)} "$@"\n`,
      { mode: 0o755 },
    );
    db = await createTestDatabase();
    system = await startSystem(db.url, ['web', 'worker', 'clock'], { PG_BIN: bin, PGFLEET_ANSWER_WITHIN: '1' });
  });
  afterAll(async () => {
    await system?.stop();
    await db?.drop();
    if (bin) await fs.rm(bin, { recursive: true, force: true });
  });

  it('lets the tenant in on its old server between attempts, then moves every row once the copy works', async () => {
    const id = randomUUID();
    const provisioned = await addonFetch(system, 'POST', '/heroku/resources', { uuid: id, plan: 'shared', region: 'us' });
    expect([200, 202]).toContain(provisioned.status);
    const oldUrl = await waitFor(
      'the shared database',
      async () => {
        const { body } = await system.api('GET', `/api/resources/${id}`);
        return body.state === 'available' ? (body.config.PGFLEET_URL as string) : undefined;
      },
      60_000,
      250,
    );
    await psql(oldUrl, 'create table t (n int primary key); insert into t select generate_series(1, 100)');

    await fs.writeFile(failFlag(), '');
    const change = await addonFetch(system, 'PUT', `/heroku/resources/${id}`, { plan: 'dedicated' });
    expect(change.status).toBe(202);
    await waitFor(
      'the copy to have failed',
      async () => {
        const { body } = await system.api('GET', `/api/resources/${id}`);
        return typeof body.lastError === 'string' && body.lastError.includes('injected failure');
      },
      90_000,
    );
    // Between attempts the tenant logs in and writes where its data is.
    await waitFor(
      'the tenant to log in on its old server while the move retries',
      async () => {
        try {
          await psql(oldUrl, 'insert into t values (101) on conflict do nothing');
          return true;
        } catch {
          return false;
        }
      },
      30_000,
      200,
    );

    await fs.rm(failFlag());
    const moved = await waitFor(
      'the move to finish',
      async () => {
        const { body } = await system.api('GET', `/api/resources/${id}`);
        return body.state === 'available' && body.plan === 'dedicated' && body.config.PGFLEET_URL !== oldUrl
          ? (body.config.PGFLEET_URL as string)
          : undefined;
      },
      120_000,
      250,
    );
    expect(await psql(moved, 'select count(*), max(n) from t')).toBe('101|101');
    expect(existsSync(failFlag())).toBe(false);
  });
});
