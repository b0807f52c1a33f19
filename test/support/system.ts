import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect } from 'vitest';
import { localCluster, runProcesses, type ProcessName, type Running } from '../../src/processes/app.ts';
import { loadConfig, type Config } from '../../src/config.ts';
import type { Pool } from '../../src/db.ts';
import { createLogger } from '../../src/log.ts';
import { stopLocalClusters } from '../../src/providers/local.ts';
import { Sealer } from '../../src/sealer.ts';
import { createTestDatabase, waitFor, type TestDatabase } from './db.ts';
import { FakePlatform } from './platform.ts';

export const TOKEN = 'test-operator-token-0123456789';
/** The key every test system seals credentials with, so tests can open them. */
export const TEST_KEY = Buffer.alloc(32, 7).toString('base64');
export const TEST_SEALER = new Sealer(Buffer.from(TEST_KEY, 'base64'));
/** The add-on API's password in every test system, and the header a platform sends with it. */
export const ADDON_PASSWORD = 'addon-password-0123456789';
export const ADDON_BASIC = `Basic ${Buffer.from(`pgfleet:${ADDON_PASSWORD}`).toString('base64')}`;

export interface System {
  config: Config;
  running: Running;
  /** The CA certificate the system hands out, saved to a file as a customer would save it. */
  caFile: string;
  api(method: string, route: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: any }>;
  stop(): Promise<void>;
}

/** pgfleet's processes against a test database, with a PGFLEET_HOME of their own. */
export async function startSystem(
  databaseUrl: string,
  processes: ProcessName[] = ['web', 'worker', 'clock'],
  env: Record<string, string> = {},
): Promise<System> {
  const home = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-home-'));
  await fs.chmod(home, 0o755);
  const config = loadConfig({
    DATABASE_URL: databaseUrl,
    PGFLEET_HOME: home,
    PORT: '0',
    OPERATOR_TOKEN: TOKEN,
    PGFLEET_ENCRYPTION_KEY: TEST_KEY,
    PGFLEET_OBSERVE_INTERVAL: '1',
    PGFLEET_JOB_LEASE: '10',
    ADDON_PASSWORD,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    ...env,
  });
  const running = await runProcesses(config, createLogger(config.logLevel), processes);
  const caFile = path.join(home, 'pgfleet-ca.pem');
  await fs.writeFile(caFile, running.caCertificate);
  return {
    config,
    running,
    caFile,
    async api(method, route, body, headers = {}) {
      const res = await fetch(`${running.url}${route}`, {
        method,
        headers: {
          authorization: `Bearer ${TOKEN}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...headers,
        },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      return { status: res.status, body: await res.json().catch(() => undefined) };
    },
    async stop() {
      await running.stop();
      await stopLocalClusters(home, localCluster(config));
      await fs.rm(home, { recursive: true, force: true });
    },
  };
}

const run = promisify(execFile);

/** Run SQL through the real psql client, as an app developer would. */
export async function psql(url: string, sql: string): Promise<string> {
  const { stdout } = await run('psql', [url, '-XAtc', sql], { timeout: 20_000 });
  return stdout.trim();
}

/** A call to the add-on API, as the platform makes it. */
export function addonFetch(system: System, method: string, route: string, body?: unknown): Promise<Response> {
  return fetch(`${system.running.url}${route}`, {
    method,
    headers: { authorization: ADDON_BASIC, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

/**
 * An `ha` database (or one of another plan with standbys) provisioned through the add-on API
 * as the platform asks for one: its id and the config vars the platform was sent once it was ready.
 */
export async function provisionHa(
  system: System,
  platform: FakePlatform,
  plan = 'ha',
): Promise<{ uuid: string; config: Record<string, string> }> {
  const uuid = randomUUID();
  const res = await addonFetch(system, 'POST', '/heroku/resources', {
    uuid,
    plan,
    region: 'us',
    callback_url: `${platform.url}/addons/${uuid}`,
    oauth_grant: { code: 'g' },
  });
  expect(res.status).toBe(202);
  const patch = await waitFor('the config', async () => platform.callsTo('PATCH', `/addons/${uuid}/config`)[0], 120_000);
  const vars = JSON.parse(patch.body).config as { name: string; value: string }[];
  return { uuid, config: Object.fromEntries(vars.map((v) => [v.name, v.value])) };
}

/** A server's superuser URL, read (and unsealed) from the control database. */
export async function adminUrl(pool: Pool, serverId: string, database = 'postgres'): Promise<string> {
  const { rows } = await pool.query<{ host: string; port: number; sealed: string }>(
    'select host, port, superuser_password_sealed as sealed from servers where id = $1',
    [serverId],
  );
  const s = rows[0]!;
  return `postgres://postgres:${encodeURIComponent(TEST_SEALER.open(s.sealed))}@${s.host}:${s.port}/${database}`;
}

/**
 * A control database and a running system of its own for a describe block, stopped after
 * it. Read the fields inside tests: they are set once beforeAll has run.
 */
export function useSystem(
  processes: ProcessName[] = ['web', 'worker', 'clock'],
  env: Record<string, string> = {},
): { db: TestDatabase; system: System } {
  const ctx = {} as { db: TestDatabase; system: System };
  beforeAll(async () => {
    ctx.db = await createTestDatabase();
    ctx.system = await startSystem(ctx.db.url, processes, env);
  });
  afterAll(async () => {
    await ctx.system?.stop();
    await ctx.db?.drop();
  });
  return ctx;
}

/**
 * A control database, a stand-in platform (the system's HEROKU_API_URL and HEROKU_ID_URL)
 * and a running system for a describe block, all stopped after it. `platform` is there at
 * once; read `db` and `system` inside tests or hooks: they are set once beforeAll has run.
 * `env` may be made from the started platform, for settings that point at it.
 */
export function useSystemWithPlatform(
  processes: ProcessName[],
  env: Record<string, string> | ((platform: FakePlatform) => Record<string, string>) = {},
): { db: TestDatabase; system: System; platform: FakePlatform } {
  const ctx = { platform: new FakePlatform() } as { db: TestDatabase; system: System; platform: FakePlatform };
  beforeAll(async () => {
    ctx.db = await createTestDatabase();
    await ctx.platform.start();
    ctx.system = await startSystem(ctx.db.url, processes, {
      HEROKU_API_URL: ctx.platform.url,
      HEROKU_ID_URL: ctx.platform.url,
      ADDON_CLIENT_SECRET: 's',
      ...(typeof env === 'function' ? env(ctx.platform) : env),
    });
  });
  afterAll(async () => {
    await ctx.system?.stop();
    await ctx.platform.stop();
    await ctx.db?.drop();
  });
  return ctx;
}
