import { tenantNames, tenantPassword, type Tenant } from '../../src/pg/tenant.ts';

/**
 * A tenant with fresh names and password, 5 connections, a 30 s statement timeout and no
 * size or memory limit, unless `limits` says otherwise.
 */
export function testTenant(limits: Partial<Tenant> = {}): Tenant {
  return {
    ...tenantNames(),
    password: tenantPassword(),
    connectionLimit: 5,
    statementTimeoutMs: 30_000,
    sizeLimitBytes: 0,
    memoryLimitBytes: 0,
    ...limits,
  };
}
