import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.ts';

describe('configuration', () => {
  it('checks PGBOUNCER_BIN at start-up, before anything starts, and names the variable', () => {
    expect(() => loadConfig({ PGBOUNCER_BIN: '/nonexistent/pgbouncer' })).toThrow(
      /PGBOUNCER_BIN=\/nonexistent\/pgbouncer is not an executable file/,
    );
    expect(() => loadConfig({ PGBOUNCER_BIN: '/etc' })).toThrow(/PGBOUNCER_BIN=\/etc is not an executable file/);
    expect(loadConfig({ PGBOUNCER_BIN: process.execPath }).pgbouncerBin).toBe(process.execPath);
    expect(loadConfig({}).pgbouncerBin).toBeUndefined();
  });

  it('takes the settings of the limits, notices and retention, and refuses nonsense', () => {
    expect(loadConfig({}).sharedMaxConnections).toBe(300);
    expect(loadConfig({}).paging.noticeGrace).toBe(30);
    expect(loadConfig({}).archiveRetentionSeconds).toBe(7 * 86_400);
    expect(() => loadConfig({ PGFLEET_SHARED_MAX_CONNECTIONS: '10' })).toThrow(
      /PGFLEET_SHARED_MAX_CONNECTIONS must be a whole number from 40/,
    );
    expect(() => loadConfig({ PGFLEET_NOTICE_GRACE: '-1' })).toThrow(/PGFLEET_NOTICE_GRACE/);
  });

  it('makes new databases on the provider PGFLEET_PROVIDER names, local by default, and refuses one it does not have', () => {
    expect(loadConfig({}).provider).toBe('local');
    expect(loadConfig({ PGFLEET_PROVIDER: 'local' }).provider).toBe('local');
    expect(() => loadConfig({ PGFLEET_PROVIDER: 'nowhere' })).toThrow(/PGFLEET_PROVIDER must be one of local\b.*, not "nowhere"/);
  });

  it('keeps job leases short, and names the worker for the claims it releases when started again', () => {
    expect(loadConfig({}).jobLease).toBe(10);
    expect(loadConfig({ DYNO: 'worker.2' }).workerName).toBe('worker.2');
    expect(loadConfig({ DYNO: 'worker.2', PGFLEET_WORKER_NAME: 'w-east-1' }).workerName).toBe('w-east-1');
    expect(loadConfig({}).workerName).toMatch(/^[A-Za-z0-9._-]+\.worker$/);
    expect(() => loadConfig({ PGFLEET_WORKER_NAME: 'two words' })).toThrow(/PGFLEET_WORKER_NAME/);
    expect(() => loadConfig({ PGFLEET_WORKER_NAME: 'x'.repeat(39) })).toThrow(/PGFLEET_WORKER_NAME/);
  });
});
