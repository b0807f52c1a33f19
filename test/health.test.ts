import { describe, expect, it } from 'vitest';
import { healthStatus, parseLag, type HealthCheck, type HealthFacts } from '../src/health.ts';
import { lsnBytes } from '../src/wal/segments.ts';

const primary: HealthFacts = { machineState: 'available', controlPrimary: true, probe: { inRecovery: false }, lagBytes: undefined };
const standby: HealthFacts = { machineState: 'available', controlPrimary: false, probe: { inRecovery: true }, lagBytes: 4096 };

describe("Patroni's health checks", () => {
  it('reads lag as Patroni does: bytes or a 1024-based unit', () => {
    expect(parseLag('0')).toBe(0);
    expect(parseLag('1048576')).toBe(1048576);
    expect(parseLag('16MB')).toBe(16 * 1024 ** 2);
    expect(parseLag('1GB')).toBe(1024 ** 3);
    expect(parseLag('64kB')).toBe(65536);
    expect(parseLag('2 tb')).toBe(2 * 1024 ** 4);
    expect(['', 'MB', '16XB', '-1', '1.5GB', 'lots'].map(parseLag)).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
  });

  it('reads WAL locations as byte positions', () => {
    expect(lsnBytes('0/3000060')).toBe(0x3000060);
    expect(lsnBytes('16/B374D848')).toBe(0x16 * 2 ** 32 + 0xb374d848);
    expect(lsnBytes(null)).toBeUndefined();
    expect(lsnBytes('nonsense')).toBeUndefined();
  });

  it('sends writes only to an available primary that the control database and Postgres agree on', () => {
    expect(healthStatus('primary', primary)).toBe(200);
    expect(healthStatus('read-only', primary)).toBe(200);
    expect(healthStatus('replica', primary)).toBe(503);
    expect(healthStatus('health', primary)).toBe(200);
    // Still in recovery (a promotion under way, a follower): not a primary whatever the row says.
    expect(healthStatus('primary', { ...primary, probe: { inRecovery: true } })).toBe(503);
    // Out of recovery but not the resource's primary (a fenced one that came back would be both).
    expect(healthStatus('primary', { ...primary, controlPrimary: false })).toBe(503);
    // Silent: no answer in time.
    expect((['primary', 'read-only', 'health'] as HealthCheck[]).map((c) => healthStatus(c, { ...primary, probe: undefined }))).toEqual([
      503, 503, 503,
    ]);
    expect(healthStatus('primary', { ...primary, machineState: 'restarting.verifying' })).toBe(503);
  });

  it('never sends anything to a server being fenced or deleted', () => {
    for (const machineState of ['fencing', 'fenced', 'deleting']) {
      expect(healthStatus('primary', { ...primary, machineState })).toBe(503);
      expect(healthStatus('read-only', { ...primary, machineState })).toBe(503);
      expect(healthStatus('replica', { ...standby, machineState })).toBe(503);
      expect(healthStatus('read-only', { ...standby, machineState })).toBe(503);
    }
  });

  it('sends reads to a replica within the lag asked for, and not when its lag is unknown', () => {
    expect(healthStatus('replica', standby)).toBe(200);
    expect(healthStatus('read-only', standby)).toBe(200);
    expect(healthStatus('primary', standby)).toBe(503);
    expect(healthStatus('replica', standby, 4096)).toBe(200);
    expect(healthStatus('replica', standby, 4095)).toBe(503);
    expect(healthStatus('read-only', standby, 0)).toBe(503);
    expect(healthStatus('read-only', primary, 0)).toBe(200);
    expect(healthStatus('replica', { ...standby, lagBytes: undefined })).toBe(200);
    expect(healthStatus('replica', { ...standby, lagBytes: undefined }, 16 * 1024 ** 2)).toBe(503);
    expect(healthStatus('replica', { ...standby, probe: undefined })).toBe(503);
    // A replica the last observation missed but that answers now still serves reads.
    expect(healthStatus('replica', { ...standby, machineState: 'unreachable' })).toBe(200);
  });
});
