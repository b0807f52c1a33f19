import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.ts';

describe('configuration', () => {
  it('checks PGBOUNCER_BIN at start-up, before anything starts, and names the variable', () => {
    expect(() => loadConfig({ PGBOUNCER_BIN: '/nonexistent/pgbouncer' })).toThrow(/PGBOUNCER_BIN=\/nonexistent\/pgbouncer is not an executable file/);
    expect(() => loadConfig({ PGBOUNCER_BIN: '/etc' })).toThrow(/PGBOUNCER_BIN=\/etc is not an executable file/);
    expect(loadConfig({ PGBOUNCER_BIN: process.execPath }).pgbouncerBin).toBe(process.execPath);
    expect(loadConfig({}).pgbouncerBin).toBeUndefined();
  });

  it('takes the settings of the limits, notices and retention, and refuses nonsense', () => {
    expect(loadConfig({}).sharedMaxConnections).toBe(300);
    expect(loadConfig({}).paging.noticeGrace).toBe(30);
    expect(loadConfig({}).archiveRetentionSeconds).toBe(7 * 86_400);
    expect(() => loadConfig({ PGFLEET_SHARED_MAX_CONNECTIONS: '10' })).toThrow(/PGFLEET_SHARED_MAX_CONNECTIONS must be a whole number from 40/);
    expect(() => loadConfig({ PGFLEET_NOTICE_GRACE: '-1' })).toThrow(/PGFLEET_NOTICE_GRACE/);
  });
});
