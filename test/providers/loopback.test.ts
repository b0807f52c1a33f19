import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServerRecord } from '../../src/providers/provider.ts';
import { PROVIDERS } from '../../src/providers/registry.ts';
import { testProviderContext } from '../support/providers.ts';

const newServer = (): ServerRecord => ({
  id: randomUUID(),
  provider: 'loopback',
  host: null,
  port: null,
  superuserPassword: 'x',
  attrs: {},
});

/** The placing alone: no server is started here (the contract suite runs them). */
describe('the loopback provider places each server at an address of its own', () => {
  let context: Awaited<ReturnType<typeof testProviderContext>>;
  beforeAll(async () => {
    context = await testProviderContext({ pooler: true });
  });
  afterAll(async () => {
    await context?.remove();
  });

  it('on the standard ports, clear of 127.0.0.1', async () => {
    const place = await PROVIDERS.loopback(context).provision(newServer());
    expect(place.host).toMatch(/^127\.([1-9]|[1-9]\d|1\d\d|2[0-4]\d|25[0-4])\.\d+\.\d+$/);
    expect(place.port).toBe(5432);
    expect(place.attrs).toMatchObject({ pool_port: '6432', health_port: '8008' });
  });

  it('never gives two servers one address, however many workers place them at once, and one server always the same', async () => {
    // Two workers, each with its own provider, on one PGFLEET_HOME.
    const workers = [PROVIDERS.loopback(context), PROVIDERS.loopback(context)];
    const servers = Array.from({ length: 20 }, newServer);
    const places = await Promise.all(servers.flatMap((s) => workers.map((w) => w.provision(s))));
    const hosts = places.map((p) => p.host);
    for (let i = 0; i < servers.length; i++) expect(hosts[2 * i]).toBe(hosts[2 * i + 1]);
    expect(new Set(hosts).size).toBe(servers.length);
  });

  it('passes over an address something else listens at, and gives a destroyed server’s address back', async () => {
    const provider = PROVIDERS.loopback(context);
    const server = newServer();
    const first = await provider.provision(server);
    await provider.destroy(server);
    expect(await fs.readdir(path.join(context.home, 'loopback'))).not.toContain(first.host);
    const squatter = net.createServer();
    await new Promise<void>((resolve) => squatter.listen(5432, first.host, resolve));
    try {
      const second = await provider.provision(server);
      expect(second.host).not.toBe(first.host);
      expect(await provider.provision({ ...server, host: null, port: null })).toEqual(second);
    } finally {
      await new Promise((resolve) => squatter.close(resolve));
    }
  });
});
