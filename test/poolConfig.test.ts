import { describe, expect, it } from 'vitest';
import { findPgbouncer } from '../src/pg/pgbouncer.ts';
import { poolFiles, poolShares, type PoolTenant } from '../src/pg/poolConfig.ts';
import { resourceConfig } from '../src/resources/config.ts';
import type { ResourceServer } from '../src/resources/rows.ts';

const tenants = (n: number, limit: number, from = 0): PoolTenant[] =>
  Array.from({ length: n }, (_, i) => ({
    database: `d${from + i}`,
    role: `u${from + i}`,
    verifier: 'SCRAM-SHA-256$4096:c2FsdA==$a:b',
    connectionLimit: limit,
  }));
const sum = (shares: Map<string, number>) => [...shares.values()].reduce((a, b) => a + b, 0);

describe('pool shares of a server', () => {
  it('gives each tenant 75% of its plan limit while those fit the room, keeping the rest for direct connections', () => {
    const shares = poolShares({ maxConnections: 100, superuserReserved: 3, tenants: tenants(2, 20) });
    expect([...shares.values()]).toEqual([15, 15]);
    expect(poolShares({ maxConnections: 100, superuserReserved: 3, tenants: tenants(1, 90) }).get('d0')).toBe(67);
  });

  it('never hands out more than the room, however many tenants and limits, and never 0', () => {
    for (const [n, limit, big] of [
      [50, 20, 0],
      [40, 20, 1],
      [49, 1, 1],
      [50, 60, 0],
      [3, -1, 0],
    ] as const) {
      const all = [...tenants(n, limit), ...tenants(big, 90, 100)];
      const shares = poolShares({ maxConnections: 100, superuserReserved: 3, tenants: all });
      expect(sum(shares)).toBeLessThanOrEqual(90);
      expect(Math.min(...shares.values())).toBeGreaterThanOrEqual(1);
      for (const t of all)
        if (t.connectionLimit > 0) expect(shares.get(t.database)!).toBeLessThanOrEqual(Math.max(1, Math.floor(t.connectionLimit * 0.75)));
    }
    // In proportion to the limits: the bigger plan gets more.
    const mixed = poolShares({ maxConnections: 100, superuserReserved: 3, tenants: [...tenants(40, 20), ...tenants(1, 90, 100)] });
    expect([mixed.get('d0'), mixed.get('d100')]).toEqual([2, 6]);
    expect(sum(mixed)).toBe(86);
  });

  it('writes each tenant its database, its share and an hba line to its own database only', () => {
    const files = poolFiles(
      { dir: '/srv/p', host: '10.1.2.3', listenPort: 6432, serverPort: 5432, superuserPassword: 'x'.repeat(32) },
      { maxConnections: 100, superuserReserved: 3, tenants: tenants(2, 20) },
    );
    expect(files['pgbouncer.ini']).toContain('d1 = host=10.1.2.3 port=5432 dbname=d1 pool_size=15 max_db_connections=15');
    expect(files['pgbouncer.ini']).toMatch(/^pool_mode = transaction$/m);
    // It listens where its server was placed, and takes clients from wherever the server does (TLS is required of them).
    expect(files['pgbouncer.ini']).toMatch(/^listen_addr = 10\.1\.2\.3$/m);
    expect(files['hba.conf'].split('\n')).toContain('host d1 u1 0.0.0.0/0 scram-sha-256');
    expect(files['userlist.txt']).toContain('"u0" "SCRAM-SHA-256$4096:c2FsdA==$a:b"');
    expect(files['userlist.txt']).not.toContain('x'.repeat(32));
    // The same catalog makes the same files: an unchanged server is not reloaded.
    const again = poolFiles(
      { dir: '/srv/p', host: '10.1.2.3', listenPort: 6432, serverPort: 5432, superuserPassword: 'x'.repeat(32) },
      { maxConnections: 100, superuserReserved: 3, tenants: tenants(2, 20) },
    );
    expect(again).toEqual(files);
  });

  it("lets every role granted CONNECT on a database through, within the database's share, a named role within its own", () => {
    const owner = { database: 'd1', role: 'u1', verifier: 'SCRAM-SHA-256$4096:c2FsdA==$a:b', connectionLimit: 21, databaseLimit: 21 };
    const analyst = { ...owner, role: 'u1_analyst', verifier: 'SCRAM-SHA-256$4096:c2FsdA==$c:d', connectionLimit: 5 };
    const catalog = { maxConnections: 100, superuserReserved: 3, tenants: [owner, analyst, ...tenants(1, 20, 2)] };
    expect([...poolShares(catalog)]).toEqual([
      ['d1', 15],
      ['d2', 15],
    ]);
    const files = poolFiles(
      { dir: '/srv/p', host: '10.1.2.3', listenPort: 6432, serverPort: 5432, superuserPassword: 'x'.repeat(32) },
      catalog,
    );
    expect(files['pgbouncer.ini'].match(/^d1 = /gm)).toHaveLength(1);
    expect(files['pgbouncer.ini']).toMatch(/^\[users\]\nu1_analyst = max_user_connections=3\n/m);
    expect(files['hba.conf'].split('\n')).toEqual(
      expect.arrayContaining(['host d1 u1 0.0.0.0/0 scram-sha-256', 'host d1 u1_analyst 0.0.0.0/0 scram-sha-256']),
    );
    expect(files['userlist.txt']).toContain('"u1_analyst" "SCRAM-SHA-256$4096:c2FsdA==$c:d"');
    // A database without a limit of its own (made before there was one) is held to its largest role's.
    expect(
      poolShares({
        ...catalog,
        tenants: [
          { ...owner, databaseLimit: -1 },
          { ...analyst, databaseLimit: -1 },
        ],
      }).get('d1'),
    ).toBe(15);
  });
});

describe('finding pgbouncer', () => {
  it('finds none on a PATH without it, and refuses a PGBOUNCER_BIN that is not one', () => {
    expect(findPgbouncer(undefined, '/nonexistent:/also-not')).toBeUndefined();
    expect(() => findPgbouncer('/nonexistent/pgbouncer')).toThrow(/PGBOUNCER_BIN=\/nonexistent\/pgbouncer is not an executable/);
  });
});

describe('the pooled URL in the config vars', () => {
  const tenant = { database: 'd1', role: 'u1', password: 'p' };
  const server = (poolPort: number | null): ResourceServer => ({
    id: 's',
    role: 'primary',
    tenancy: 'shared',
    state: 'available',
    finished: false,
    host: '127.0.0.1',
    port: 5432,
    alive: 'true',
    poolPort,
  });

  it("points at the server's pooler, or at the router's pool port when routed", () => {
    expect(resourceConfig('PGFLEET', tenant, server(6432), undefined)).toEqual({
      PGFLEET_URL: 'postgres://u1:p@127.0.0.1:5432/d1?sslmode=require',
      PGFLEET_CONNECTION_POOL_URL: 'postgres://u1:p@127.0.0.1:6432/d1?sslmode=require',
    });
    expect(resourceConfig('PGFLEET', tenant, server(6432), { host: '127.0.0.1', port: 7000, readOnlyPort: 7001, poolPort: 7002 })).toEqual({
      PGFLEET_URL: 'postgres://u1:p@127.0.0.1:7000/d1?sslmode=require',
      PGFLEET_READONLY_URL: 'postgres://u1:p@127.0.0.1:7001/d1?sslmode=require',
      PGFLEET_CONNECTION_POOL_URL: 'postgres://u1:p@127.0.0.1:7002/d1?sslmode=require',
    });
  });

  it('hands out none for a server without a pooler', () => {
    expect(Object.keys(resourceConfig('PGFLEET', tenant, server(null), undefined))).toEqual(['PGFLEET_URL']);
    expect(
      Object.keys(resourceConfig('PGFLEET', tenant, server(null), { host: '127.0.0.1', port: 7000, readOnlyPort: 7001, poolPort: 7002 })),
    ).toEqual(['PGFLEET_URL', 'PGFLEET_READONLY_URL']);
  });
});
