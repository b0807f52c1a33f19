/**
 * The plans a platform can provision, as data. `shared` plans put a database and an owner
 * role on a server shared with other tenants, within the plan's connection limit and
 * statement timeout; `dedicated` plans get a server of their own. Changing between plans of
 * one kind changes only those limits; changing kind moves the data to another server.
 */
export interface Plan {
  name: string;
  kind: 'shared' | 'dedicated';
  description: string;
  /** Connections the tenant's role may hold at once. */
  connectionLimit: number;
  /** Longest statement before Postgres cancels it, in milliseconds; 0 means none. */
  statementTimeoutMs: number;
  /** Bytes a shared database may hold before its writes are refused; 0: the server's disk is the limit. */
  sizeLimitBytes: number;
  /** Private memory one session may use (whatever `work_mem` it sets) before it is ended; 0: no limit. */
  memoryLimitBytes: number;
  /** Synchronous standbys on servers of their own: a commit is acknowledged once one has it. */
  standbys: number;
  /**
   * What a plan with a standby does when its standby stalls (stops answering while commits
   * wait for it). `available` (the default): the primary stops waiting for it within
   * seconds, and acknowledges commits alone until the standby has caught up and is made
   * synchronous again; a primary lost in that window can take those commits with it.
   * `strict`: commits wait for the standby however long it takes; the stall is paged.
   */
  synchronous?: 'available' | 'strict';
}

const MIB = 1024 ** 2;
const GIB = 1024 ** 3;

export const PLANS: readonly Plan[] = [
  {
    name: 'shared',
    kind: 'shared',
    description: 'A database and role of its own on a shared server; ready at once.',
    connectionLimit: 20,
    statementTimeoutMs: 30_000,
    sizeLimitBytes: GIB,
    memoryLimitBytes: 256 * MIB,
    standbys: 0,
  },
  {
    name: 'shared-plus',
    kind: 'shared',
    description: 'The shared plan with more connections and longer statements.',
    connectionLimit: 60,
    statementTimeoutMs: 120_000,
    sizeLimitBytes: 10 * GIB,
    memoryLimitBytes: 512 * MIB,
    standbys: 0,
  },
  {
    name: 'dedicated',
    kind: 'dedicated',
    description: 'A Postgres server of its own; ready in seconds.',
    // Postgres' default max_connections is 100; leave room for the platform's own sessions.
    connectionLimit: 90,
    statementTimeoutMs: 0,
    sizeLimitBytes: 0,
    memoryLimitBytes: 0,
    standbys: 0,
  },
  {
    name: 'ha',
    kind: 'dedicated',
    description:
      'A server of its own and a synchronous standby on another: a commit is acknowledged once both have it; ' +
      'a standby that stalls is not waited for until it catches up.',
    connectionLimit: 90,
    statementTimeoutMs: 0,
    sizeLimitBytes: 0,
    memoryLimitBytes: 0,
    standbys: 1,
    synchronous: 'available',
  },
  {
    name: 'ha-strict',
    kind: 'dedicated',
    description: 'The ha plan that never acknowledges a commit one server alone has: a stalled standby holds commits up until it answers.',
    connectionLimit: 90,
    statementTimeoutMs: 0,
    sizeLimitBytes: 0,
    memoryLimitBytes: 0,
    standbys: 1,
    synchronous: 'strict',
  },
];

/** Tenants a shared server takes before placement opens another. */
export const SHARED_SERVER_TENANTS = 50;

export function findPlan(name: unknown): Plan | undefined {
  return PLANS.find((p) => p.name === name);
}

/** Heroku's short region names and the AWS regions they stand for. */
const SHORT_REGIONS = new Map([
  ['us', 'us-east-1'],
  ['eu', 'eu-west-1'],
]);
const AWS_REGION = /^amazon-web-services::([a-z]{2}(?:-gov)?-[a-z]+-\d)$/;

/**
 * The AWS region a Heroku region name stands for: `us`, `eu`, or the long form
 * `amazon-web-services::eu-central-1`. Undefined for anything else.
 */
export function awsRegion(name: unknown): string | undefined {
  if (typeof name !== 'string') return undefined;
  // A Map, not an object: "constructor" or "__proto__" must not be found on a prototype.
  return SHORT_REGIONS.get(name) ?? AWS_REGION.exec(name)?.[1];
}

export const REGION_HELP = 'use "us", "eu" or "amazon-web-services::<aws region>" such as "amazon-web-services::us-east-1"';
