import { describe, expect, it } from 'vitest';
import { CONDITIONS, healthOf, stuckAfter } from '../../src/incidents/policy.ts';

const present = (obs: Record<string, string>) => Object.keys(CONDITIONS).filter((name) => CONDITIONS[name]!(obs));

describe('what counts as trouble', () => {
  it('reads conditions without automation off a server observation', () => {
    expect(
      present({ reachable: 'true', archiver_failing: 'false', disk_free_bytes: '50', disk_total_bytes: '100', oldest_xid_age: '1000' }),
    ).toEqual([]);
    expect(present({ archiver_failing: 'true' })).toEqual(['archive failing']);
    expect(present({ archive_lag_bytes: String(300 * 1024 ** 2) })).toEqual(['archive lagging']);
    expect(present({ archive_lag_bytes: String(20 * 1024 ** 2) })).toEqual([]);
    expect(present({ disk_free_bytes: '4', disk_total_bytes: '100' })).toEqual(['disk filling']);
    expect(present({ oldest_xid_age: '1600000000' })).toEqual(['transaction ID wraparound approaching']);
    expect(present({ replication_lag_seconds: '0.4', replication_lag_bytes: '8192' })).toEqual([]);
    expect(present({ replication_lag_seconds: '75' })).toEqual(['replication lagging']);
    expect(present({ replication_lag_bytes: String(2 * 1024 ** 3) })).toEqual(['replication lagging']);
    expect(present({ connections: '60', max_connections: '100' })).toEqual([]);
    expect(present({ connections: '96', max_connections: '100' })).toEqual(['connection slots nearly exhausted']);
  });

  it('tells healthy, trouble, on-the-way and going-away states apart', () => {
    expect(healthOf('server', 'available')).toBe('healthy');
    expect(['unreachable', 'restarting.running', 'failed.waiting'].map((s) => healthOf('server', s))).toEqual([
      'unhealthy',
      'unhealthy',
      'unhealthy',
    ]);
    expect(['provisioning', 'starting.verifying', 'maintaining.running'].map((s) => healthOf('server', s))).toEqual([
      'neutral',
      'neutral',
      'neutral',
    ]);
    expect(healthOf('server', 'deleting')).toBe('gone');
    expect(healthOf('resource', 'creating.tenant.failed')).toBe('unhealthy');
    expect(healthOf('resource', 'changing.copying.trying')).toBe('neutral');
    expect(['failover.fencing.trying', 'rejoining.syncing', 'replacing.standby.trying'].map((s) => healthOf('resource', s))).toEqual([
      'unhealthy',
      'unhealthy',
      'unhealthy',
    ]);
  });

  it('keeps deadlines per state as data, which PGFLEET_STUCK_AFTER overrides', () => {
    expect(stuckAfter('server', 'unreachable', undefined)).toBe(60);
    expect(stuckAfter('server', 'restarting.verifying', undefined)).toBe(180);
    expect(stuckAfter('resource', 'changing.copying.failed', undefined)).toBe(300);
    expect(stuckAfter('server', 'provisioning', undefined)).toBe(0);
    expect(stuckAfter('server', 'unreachable', 5)).toBe(5);
  });
});
