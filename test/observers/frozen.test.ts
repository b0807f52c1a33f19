import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { observePostgres } from '../../observers/postgres.ts';
import { signalAll } from '../../src/chaos/processes.ts';
import { findPgBinaries } from '../../src/pg/binaries.ts';
import { PgCluster, pgIdentity } from '../../src/pg/cluster.ts';
import { freePort } from '../../src/pg/ports.ts';
import { asSuperuser, type SuperuserTarget } from '../../src/pg/superuser.ts';

/** What `promise` gave, or 'still waiting' after `ms`. */
function within<T>(ms: number, promise: Promise<T>): Promise<T | 'still waiting'> {
  return Promise.race([promise, new Promise<'still waiting'>((resolve) => setTimeout(() => resolve('still waiting'), ms).unref())]);
}

/**
 * A TCP proxy to `port` that stops (SIGSTOP) the backend of a connection the moment its
 * client says goodbye (Terminate), before passing the goodbye on: a server frozen right
 * after it answered. Its end of the connection stays open, as the frozen backend's does.
 * Every message a server sends is a type byte and a length; BackendKeyData ('K') carries the
 * backend's pid.
 */
async function freezingOnGoodbye(port: number, frozen: number[]): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer({ allowHalfOpen: true }, (client) => {
    const upstream = net.connect(port, '127.0.0.1');
    sockets.add(client).add(upstream);
    let pid: number | undefined;
    let unread = Buffer.alloc(0);
    upstream.on('data', (chunk: Buffer) => {
      unread = Buffer.concat([unread, chunk]);
      while (unread.length >= 5 && unread.length >= 1 + unread.readInt32BE(1)) {
        if (unread[0] === 0x4b) pid = unread.readInt32BE(5);
        unread = unread.subarray(1 + unread.readInt32BE(1));
      }
      client.write(chunk);
    });
    client.on('data', (chunk: Buffer) => {
      // node-postgres writes Terminate ('X', length 4) on its own.
      if (pid !== undefined && chunk.length === 5 && chunk[0] === 0x58) {
        frozen.push(pid);
        signalAll([pid], 'SIGSTOP');
      }
      upstream.write(chunk);
    });
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop);
    upstream.on('error', drop);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    port: (proxy.address() as net.AddressInfo).port,
    close() {
      for (const s of sockets) s.destroy();
      proxy.close();
    },
  };
}

/**
 * A server stopped (SIGSTOP, the failover bench's hang) just after it answered a client:
 * the client's goodbye is never read and the server never closes its end, so waiting for
 * the connection to close waits forever. bench:failover run 40 of 40 (30 other servers) saw
 * no transition in 60 s after such a hang: an observation of the primary never ended, and
 * held the server's observation lane.
 */
describe('a server frozen just after it answered', () => {
  const cluster = new PgCluster(findPgBinaries(process.env.PG_BIN), pgIdentity());
  let home: string;
  let dataDir: string;
  let target: SuperuserTarget;
  const frozen: number[] = [];

  beforeAll(async () => {
    home = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-frozen-'));
    await fs.chmod(home, 0o755);
    dataDir = path.join(home, 'data');
    target = { host: '127.0.0.1', port: await freePort(), password: 'frozen-test-password' };
    await cluster.init({ dataDir, host: target.host, port: target.port, superuserPassword: target.password });
    await cluster.start(dataDir);
  });
  afterEach(() => {
    signalAll(frozen.splice(0), 'SIGCONT');
  });
  afterAll(async () => {
    signalAll(frozen.splice(0), 'SIGCONT');
    await cluster.stop(dataDir, 'kill');
    await fs.rm(home, { recursive: true, force: true });
  });

  it('does not hold up its observation, which reports what it answered', async () => {
    const proxy = await freezingOnGoodbye(target.port, frozen);
    try {
      const obs = await within(5000, observePostgres({ ...target, port: proxy.port }, 1000));
      expect(frozen).toHaveLength(1);
      expect(obs).not.toBe('still waiting');
      expect(obs).toMatchObject({ reachable: 'true', in_recovery: 'false' });
    } finally {
      proxy.close();
    }
  });

  it('does not hold up a superuser session whose work was done', async () => {
    const done = asSuperuser(target, 'postgres', async (client) => {
      const { rows } = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
      frozen.push(rows[0]!.pid);
      signalAll([rows[0]!.pid], 'SIGSTOP');
      return 'done';
    });
    expect(await within(5000, done)).toBe('done');
  });
});
