/**
 * The plans a platform can provision, as data. `shared` plans put a database and an owner
 * role on a server shared with other tenants, within the plan's connection limit and
 * statement timeout; `dedicated` plans get a server of their own.
 */
export interface Plan {
  name: string;
  kind: 'shared' | 'dedicated';
  description: string;
  /** Connections the tenant's role may hold at once. */
  connectionLimit: number;
  /** Longest statement before Postgres cancels it, in milliseconds; 0 means none. */
  statementTimeoutMs: number;
}

export const PLANS: readonly Plan[] = [
  {
    name: 'shared',
    kind: 'shared',
    description: 'A database and role of its own on a shared server; ready at once.',
    connectionLimit: 20,
    statementTimeoutMs: 30_000,
  },
  {
    name: 'dedicated',
    kind: 'dedicated',
    description: 'A Postgres server of its own; ready in seconds.',
    connectionLimit: 500,
    statementTimeoutMs: 0,
  },
];

