import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServerRecord } from '../../src/providers/provider.ts';
import {
  desynchronize,
  standbyName,
  StandbysNotSynchronous,
  synchronizeStandbys,
  type SyncProgress,
} from '../../src/replication/standbys.ts';
import { takeBaseBackup } from '../../src/wal/backup.ts';
import { archivedServers, type ArchivedServers } from '../support/archived.ts';
import { waitFor } from '../support/db.ts';

/** What the re-ask carries between attempts, in this test the loop's variable. */
interface Attempts {
  ms: number[];
  progress: SyncProgress | undefined;
}

/**
 * Making a standby synchronous, one attempt at a time: an attempt never waits for the standby
 * (it polled for up to 15 s in place, holding a worker slot and the resource's actions); it
 * says how far it got, and the next attempt goes on from there.
 */
describe('making a standby synchronous', { timeout: 180_000 }, () => {
  let s: ArchivedServers;
  let primary: ServerRecord;
  let standby: ServerRecord;
  const target = () => ({ host: primary.host!, port: primary.port!, password: primary.superuserPassword });
  const names = () => [standbyName(standby.id)];
  const setting = async () => String((await s.query(primary, 'show synchronous_standby_names')).rows[0].synchronous_standby_names);
  const streaming = async () => (await s.query(primary, 'select 1 from pg_stat_replication')).rows.length > 0;

  /** One attempt, as one run of the job: the progress it leaves, or 'done'. */
  async function attempt(attempts: Attempts, timeoutMs?: number): Promise<'done'> {
    const started = performance.now();
    try {
      await synchronizeStandbys(target(), names(), timeoutMs, attempts.progress);
      return 'done';
    } catch (err) {
      if (!(err instanceof StandbysNotSynchronous)) throw err;
      attempts.progress = err.progress;
      throw err;
    } finally {
      attempts.ms.push(performance.now() - started);
    }
  }

  /** Attempts 200 ms apart (the step's re-ask) until one is done or fails for good. */
  async function attemptUntilDone(attempts: Attempts, timeoutMs?: number): Promise<void> {
    for (;;) {
      try {
        await attempt(attempts, timeoutMs);
        return;
      } catch (err) {
        if (!(err instanceof StandbysNotSynchronous)) throw err;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  beforeAll(async () => {
    s = await archivedServers();
    primary = await s.server();
    await s.query(primary, 'create table t (n int)');
    await takeBaseBackup(s.bin, s.store, `servers/${primary.id}`, target(), 'p-1');
    standby = await s.server({ follows: primary.id, backup_label: 'p-1' }, primary);
    await waitFor('the standby to stream', streaming, 30_000);
  });
  afterAll(async () => {
    await s?.cleanup();
  });

  it('ends each attempt at once while the standby is away, and is done once it is back and flushed', async () => {
    await s.provider.host(standby).stop('kill');
    const attempts: Attempts = { ms: [], progress: undefined };
    for (let i = 0; i < 3; i++) await expect(attempt(attempts)).rejects.toThrow(StandbysNotSynchronous);
    // Commits wait for the standby from the first attempt on: that is the point.
    expect(await setting()).toBe(`FIRST 1 ("${names()[0]}")`);
    const { deadline } = attempts.progress!;

    await s.provider.host(standby).start();
    await attemptUntilDone(attempts);
    expect(Math.max(...attempts.ms)).toBeLessThan(1000);
    expect(attempts.progress!.deadline).toBe(deadline);
    await s.query(primary, 'insert into t values (1)');
    expect((await s.query(standby, 'select count(*)::int as n from t')).rows[0].n).toBe(1);
  });

  it('gives up once the bound from the first attempt has passed, and no commit waits for the standby', async () => {
    await desynchronize(target());
    await s.provider.host(standby).stop('kill');
    const attempts: Attempts = { ms: [], progress: undefined };
    const started = performance.now();
    await expect(attemptUntilDone(attempts, 1500)).rejects.toThrow(/became synchronous within 1.5 s/);
    expect(performance.now() - started).toBeGreaterThan(1500);
    expect(performance.now() - started).toBeLessThan(5000);
    expect(Math.max(...attempts.ms)).toBeLessThan(1000);
    expect(await setting()).toBe('');
    await s.provider.host(standby).start();
    await waitFor('the standby to stream again', streaming, 30_000);
  });

  it('trusts the flush position it took only while the configuration has not been loaded again since', async () => {
    await attemptUntilDone({ ms: [], progress: undefined });
    const loaded = String((await s.query(primary, 'select pg_conf_load_time()::text as t')).rows[0].t);
    const deadline = new Date(Date.now() + 60_000).toISOString();
    // A position no standby has flushed: kept, it is waited for; from before a reload, it is taken again.
    const unreachable = { deadline, target: 'FF/0', loadedAt: loaded };
    await expect(synchronizeStandbys(target(), names(), undefined, unreachable)).rejects.toThrow(/has not flushed FF\/0/);
    await synchronizeStandbys(target(), names(), undefined, { ...unreachable, loadedAt: 'before a reload' });
  });
});
