import { spawn, type ChildProcess, execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { clusterStatus } from '../../src/pg/cluster.ts';
import { createTestDatabase, waitFor } from '../support/db.ts';
import { psql, TEST_KEY, TEST_SEALER } from '../support/system.ts';

const exec = promisify(execFile);
const BIN = path.resolve('bin/pgfleet.js');

interface Proc {
  child: ChildProcess;
  out: () => string;
}

function launch(args: string[], env: Record<string, string>): Proc {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  return { child, out: () => out };
}

async function stop(p: Proc): Promise<number | null> {
  if (p.child.exitCode !== null) return p.child.exitCode;
  const exited = new Promise<number | null>((r) => p.child.once('exit', (code) => r(code)));
  p.child.kill('SIGTERM');
  return exited;
}

async function cli(args: string[], env: Record<string, string>): Promise<string> {
  const { stdout } = await exec(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } });
  return stdout;
}

const started: Proc[] = [];
const homes: string[] = [];
afterAll(async () => {
  for (const p of started) await stop(p);
  for (const home of homes) {
    await cli(['down'], { PGFLEET_HOME: home }).catch(() => undefined);
    await fs.rm(home, { recursive: true, force: true });
  }
});

async function newHome(): Promise<string> {
  const home = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-e2e-'));
  await fs.chmod(home, 0o755);
  homes.push(home);
  return home;
}

describe('the pgfleet command', () => {
  it('`start` runs everything on an embedded control database that survives a restart, and `down` stops it all', async () => {
    const home = await newHome();
    const env = { PGFLEET_HOME: home, PORT: '0', PGFLEET_OBSERVE_INTERVAL: '1' };
    // At debug level, so the check below that no credential reaches the log means something.
    const first = launch(['start'], { ...env, LOG_LEVEL: 'debug' });
    started.push(first);
    const url = await waitFor('the web process to listen', async () => /listening on (http:\/\/\S+)/.exec(first.out())?.[1]);
    const token = /operator token: (\S+)/.exec(first.out())![1]!;
    const apiEnv = { ...env, PGFLEET_API_URL: url };

    const created = JSON.parse(await cli(['servers', 'create', '--json'], apiEnv)) as { id: string };
    await waitFor('the server to become available', async () =>
      (await cli(['servers', 'show', created.id], apiEnv)).includes('state:      available'),
    );
    const res = await fetch(`${url}/api/servers/${created.id}`, { headers: { authorization: `Bearer ${token}` } });
    expect(((await res.json()) as { state: string }).state).toBe('available');

    // The manifest holds the credentials pgfleet made for this home; a platform provisions with them.
    const manifest = JSON.parse(await cli(['manifest'], env)) as {
      id: string;
      api: { password: string; config_vars: string[]; version: string };
    };
    expect(manifest).toMatchObject({
      id: 'pgfleet',
      api: { config_vars: ['PGFLEET_URL', 'PGFLEET_CONNECTION_POOL_URL', 'PGFLEET_READONLY_URL'], version: '3' },
    });
    const uuid = randomUUID();
    const provision = await fetch(`${url}/heroku/resources`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`pgfleet:${manifest.api.password}`).toString('base64')}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ uuid, plan: 'shared', region: 'us', options: {} }),
    });
    expect(provision.status).toBe(200);
    const { config } = (await provision.json()) as { config: { PGFLEET_URL: string } };
    expect(await psql(config.PGFLEET_URL, 'select current_user = session_user')).toBe('t');
    expect(first.out()).toMatch(/"msg":"provisioning"/);
    expect(first.out()).not.toContain(decodeURIComponent(new URL(config.PGFLEET_URL).password));
    expect(first.out()).not.toContain(manifest.api.password);
    expect(await cli(['resources'], apiEnv)).toMatch(new RegExp(`${uuid}\\s+shared\\s+available`));
    expect(await cli(['info', uuid], apiEnv)).toMatch(/^Plan:\s+shared$/m);
    expect(await cli(['diagnose', uuid], apiEnv)).toMatch(/^GREEN: connection count: 0 of 20 connections in use$/m);
    const later = new Date(Date.now() + 3_600_000).toISOString();
    expect(await cli(['maintenance', 'schedule', uuid, later], apiEnv)).toMatch(/^maintenance \S+ scheduled for /);
    expect(await cli(['incidents'], apiEnv)).toMatch(/maintenance\s+scheduled\s+server/);
    expect(await stop(first)).toBe(0);

    // Again, on the same home: the same control database, token and server.
    const second = launch(['start'], env);
    started.push(second);
    const url2 = await waitFor('the web process to listen again', async () => /listening on (http:\/\/\S+)/.exec(second.out())?.[1]);
    expect(second.out()).toContain(`operator token: ${token}`);
    const listed = await cli(['servers'], { ...env, PGFLEET_API_URL: url2 });
    expect(listed).toContain(created.id);
    expect(listed).toContain('available');
    expect(await stop(second)).toBe(0);

    const down = await cli(['down'], env);
    // The server, the shared server the resource lives on, and the control database.
    expect(down).toMatch(/3 Postgres servers stopped/);
    expect((await clusterStatus(path.join(home, 'servers', created.id, 'data'))).running).toBe(false);
    expect((await clusterStatus(path.join(home, 'control', 'data'))).running).toBe(false);
  });

  it('runs the Procfile processes separately against one DATABASE_URL, and `promote` switches an ha database over', async () => {
    const db = await createTestDatabase();
    const home = await newHome();
    const env = {
      DATABASE_URL: db.url,
      PGFLEET_HOME: home,
      OPERATOR_TOKEN: 'procfile-test-token-0123456789',
      PGFLEET_ENCRYPTION_KEY: TEST_KEY,
      PGFLEET_OBSERVE_INTERVAL: '1',
      ADDON_PASSWORD: 'procfile-addon-password-0123',
    };
    const procfile = await fs.readFile('Procfile', 'utf8');
    const commands = Object.fromEntries(
      procfile
        .trim()
        .split('\n')
        .map((l) => l.split(/:\s+/)),
    );
    expect(Object.keys(commands)).toEqual(['web', 'worker', 'clock', 'router']);
    const procs = (['web', 'worker', 'clock', 'router'] as const).map((name) => {
      const args = commands[name]!.split(' ').slice(2);
      return launch(args, { ...env, PORT: '0' });
    });
    started.push(...procs);
    const url = await waitFor('web to listen', async () => /listening on (http:\/\/\S+)/.exec(procs[0]!.out())?.[1]);
    const apiEnv = { ...env, PGFLEET_API_URL: url };
    const created = JSON.parse(await cli(['servers', 'create', '--json'], apiEnv)) as { id: string };
    await waitFor('the server to become available', async () =>
      (await cli(['servers', 'show', created.id], apiEnv)).includes('state:      available'),
    );
    const { rows } = await db.pool.query<{ host: string; port: number; sealed: string }>(
      'select host, port, superuser_password_sealed as sealed from servers',
    );
    const s = rows[0]!;
    const pw = TEST_SEALER.open(s.sealed);
    expect(await psql(`postgres://postgres:${encodeURIComponent(pw)}@${s.host}:${s.port}/postgres`, 'select 1')).toBe('1');
    expect(await cli(['jobs', 'dead'], apiEnv)).toBe('no dead jobs\n');
    await db.pool.query(`insert into jobs (task, attempts, last_error, dead_at) values ('restart', 10, 'gave up', now())`);
    expect(await cli(['jobs', 'dead'], apiEnv)).toMatch(/restart .* 10 .* gave up/);

    // An ha database through the add-on API, switched over by an operator with the CLI: the
    // router process keeps its URL on whichever server is primary.
    const uuid = randomUUID();
    const provision = await fetch(`${url}/heroku/resources`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`pgfleet:${env.ADDON_PASSWORD}`).toString('base64')}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ uuid, plan: 'ha', region: 'us' }),
    });
    expect(provision.status).toBe(202);
    type Shown = { state: string; config: { PGFLEET_URL: string }; servers: { id: string; role: string; state: string; port: number }[] };
    const shown = async () =>
      (await (await fetch(`${url}/api/resources/${uuid}`, { headers: { authorization: `Bearer ${env.OPERATOR_TOKEN}` } })).json()) as Shown;
    const ready = await waitFor('the ha database', async () => ((await shown()).state === 'available' ? shown() : undefined), 120_000);
    const standby = ready.servers.find((s) => s.role === 'standby')!;
    await psql(ready.config.PGFLEET_URL, 'create table kept (n int); insert into kept values (1)');
    expect(await cli(['promote', uuid], apiEnv)).toMatch(new RegExp(`^switching over ${uuid}: its standby becomes the primary`));
    await waitFor(
      'the switchover',
      async () => {
        const r = await shown();
        return r.state === 'available' && r.servers.some((s) => s.id === standby.id && s.role === 'primary');
      },
      120_000,
    );
    await waitFor(
      'the URL to take writes on the new primary',
      async () =>
        await psql(ready.config.PGFLEET_URL, 'insert into kept values (2)').then(
          () => true,
          () => false,
        ),
      30_000,
    );
    const primary = (await shown()).servers.find((s) => s.role === 'primary')!;
    expect(primary.id).toBe(standby.id);
    expect(await psql(ready.config.PGFLEET_URL, 'select count(*), inet_server_port() from kept')).toBe(`2|${primary.port}`);
    for (const p of procs) expect(await stop(p)).toBe(0);
    await db.drop();
  }, 240_000);

  it('names the variable when the configuration is wrong, and the fix when the API is unreachable', async () => {
    const bad = await exec(process.execPath, [BIN, 'start'], { env: { ...process.env, PORT: 'abc' } }).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect(bad).toMatchObject({ code: 1, stderr: 'pgfleet: PORT must be a whole number from 0 to 65535, not "abc"\n' });
    const home = await newHome();
    const env: NodeJS.ProcessEnv = { ...process.env, PGFLEET_HOME: home, PGFLEET_API_URL: 'http://127.0.0.1:1' };
    delete env.OPERATOR_TOKEN;
    const fails = (args: string[], extra: Record<string, string> = {}) =>
      exec(process.execPath, [BIN, ...args], { env: { ...env, ...extra } }).catch((e: { code: number; stderr: string }) => e);
    const down = await fails(['servers'], { OPERATOR_TOKEN: 'cli-test-token-0123456789' });
    expect(down).toMatchObject({ code: 1 });
    expect((down as { stderr: string }).stderr).toMatch(/cannot reach pgfleet at http:\/\/127.0.0.1:1/);

    // A client without a token says so, and makes none up (a new one would open nothing).
    const untokened = await fails(['servers']);
    expect(untokened).toMatchObject({ code: 1 });
    expect((untokened as { stderr: string }).stderr).toMatch(/^pgfleet: no operator token: set OPERATOR_TOKEN/);
    await expect(fs.access(path.join(home, 'secrets.json'))).rejects.toThrow(/ENOENT/);

    // `--provider` without a name is a mistake, not the default provider.
    const bare = await fails(['servers', 'create', '--provider'], { OPERATOR_TOKEN: 'cli-test-token-0123456789' });
    expect(bare).toMatchObject({ code: 1, stderr: 'pgfleet: usage: pgfleet servers create [--provider <name>], e.g. --provider local\n' });
  });
});
