import { randomInt, randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { HealthServer } from '../../src/health.ts';
import { createLogger } from '../../src/log.ts';
import { freePort } from '../../src/pg/ports.ts';
import { useTestDatabase, waitFor } from '../support/db.ts';
import { TEST_SEALER } from '../support/system.ts';

/** The status of a health check, or the error that kept it from being asked. */
const check = (host: string, port: number, route: string) =>
  fetch(`http://${host}:${port}${route}`).then(
    (res) => res.status,
    (err: Error) => String((err.cause as Error | undefined)?.message ?? err.message),
  );

describe('the health checks', () => {
  const test = useTestDatabase();
  let health: HealthServer | undefined;
  afterAll(async () => {
    await health?.stop();
  });

  it("answer at the server's own address, where HAProxy's `check port` looks, and not at 127.0.0.1", async () => {
    // An address of 127.0.0.0/8 other than 127.0.0.1, as a server on a host of its own has one.
    const host = `127.${randomInt(1, 255)}.${randomInt(1, 255)}.${randomInt(1, 255)}`;
    const [port, healthPort] = [await freePort(host), await freePort(host)];
    const id = randomUUID();
    await test.db.pool.query(
      `insert into servers (id, provider, host, port, superuser_password_sealed, attrs)
       values ($1, 'local', $2, $3, $4, hstore('health_port', $5))`,
      [id, host, port, TEST_SEALER.seal('password'), String(healthPort)],
    );
    await test.db.pool.query(
      `insert into machines (entity_id, machine, version, state, snapshot) values ($1, 'server', 1, 'available', '{}')`,
      [id],
    );
    health = new HealthServer(test.db.pool, TEST_SEALER, createLogger('silent'), 50, 500);
    await health.start();
    // Nothing listens at the server's port: Postgres does not answer, and the check says so.
    expect(await waitFor('the check to answer', async () => (await check(host, healthPort, '/health')) === 503, 5_000, 20)).toBe(true);
    expect(await check('127.0.0.1', healthPort, '/health')).toMatch(/ECONNREFUSED/);
  });
});
