import { tenantUrl, type Tenant } from '../pg/tenant.ts';
import type { ResourceServer } from './rows.ts';
import type { Route } from './routes.ts';

/**
 * The config vars a platform gets: `<PREFIX>_URL`, every value a string. It points at the
 * router when the resource has one (its address outlives any server), else at the primary;
 * with the router comes `<PREFIX>_READONLY_URL`, for reads that may lag a little. Beside
 * each URL to Postgres, `<PREFIX>_CONNECTION_POOL_URL` (Heroku's name) reaches the same
 * database through the server's pgbouncer, where many clients share few server
 * connections; only when the server has a pooler (through the router when there is one).
 */
export function resourceConfig(
  prefix: string,
  tenant: Pick<Tenant, 'database' | 'role' | 'password'>,
  primary: ResourceServer | undefined,
  route: Route | undefined,
): Record<string, string> {
  if (!primary || primary.host === null || primary.port === null) return {};
  const pool = (host: string, port: number | null | undefined) =>
    primary.poolPort !== null && port ? { [`${prefix}_CONNECTION_POOL_URL`]: tenantUrl(host, port, tenant) } : {};
  if (!route) return { [`${prefix}_URL`]: tenantUrl(primary.host, primary.port, tenant), ...pool(primary.host, primary.poolPort) };
  return {
    [`${prefix}_URL`]: tenantUrl(route.host, route.port, tenant),
    ...(route.readOnlyPort ? { [`${prefix}_READONLY_URL`]: tenantUrl(route.host, route.readOnlyPort, tenant) } : {}),
    ...pool(route.host, route.poolPort),
  };
}
