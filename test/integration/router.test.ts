import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.ts';
import { freePort } from '../../src/pg/ports.ts';
import { takeOver } from '../../src/resources/rows.ts';
import { Router } from '../../src/processes/router.ts';
import { useTestDatabase, waitFor } from '../support/db.ts';

const log = createLogger('silent');

/** A server that says its name to each connection and hangs up. */
async function namedServer(name: string): Promise<{ port: number; close: () => Promise<void> }> {
  const server = net.createServer((socket) => socket.end(name));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

function ask(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let said = '';
    socket.on('data', (b) => (said += b.toString()));
    socket.on('close', () => resolve(said));
    socket.on('error', () => resolve(''));
  });
}

describe('the router', () => {
  const test = useTestDatabase();
  const servers: { port: number; close: () => Promise<void> }[] = [];
  let router: Router;

  beforeAll(async () => {
    servers.push(await namedServer('first'), await namedServer('second'));
  });
  afterAll(async () => {
    await router?.stop();
    for (const s of servers) await s.close();
  });

  it('follows a change of primary as soon as it commits, not at its next refresh', async () => {
    const resource = randomUUID();
    const routerPort = await freePort();
    const ids = [randomUUID(), randomUUID()];
    await test.db.pool.query(
      `insert into resources (id, plan, region, aws_region, database_name, role_name, password_sealed, attrs)
       values ($1, 'ha', 'us', 'us-east-1', $2, $2, 'x', hstore('router_port', $3))`,
      [resource, `d${resource.slice(0, 8)}`, String(routerPort)],
    );
    for (const [i, id] of ids.entries()) {
      await test.db.pool.query(
        `insert into servers (id, provider, host, port, superuser_password_sealed) values ($1, 'local', '127.0.0.1', $2, 'x')`,
        [id, servers[i]!.port],
      );
      await test.db.pool.query(
        `insert into machines (entity_id, machine, version, state, snapshot) values ($1, 'server', 1, 'available', '{}')`,
        [id],
      );
      await test.db.pool.query(`insert into resource_servers (resource_id, server_id, role) values ($1, $2, $3)`, [
        resource,
        id,
        i === 0 ? 'primary' : 'standby',
      ]);
    }
    await test.db.pool.query(
      `insert into machines (entity_id, machine, version, state, snapshot) values ($1, 'resource', 1, 'available', '{}')`,
      [resource],
    );
    // Its own refresh once a minute: only being told of the change can be quick.
    router = new Router(test.db.pool, '127.0.0.1', log, { refreshMs: 60_000 });
    await router.start();
    expect(await ask(routerPort)).toBe('first');

    await takeOver(test.db.pool, resource, 'standby');
    await waitFor('the router to send connections to the new primary', async () => (await ask(routerPort)) === 'second', 5_000, 20);
  });
});
