import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { localCluster, type Running } from '../src/processes/app.ts';
import { loadConfig, type Config } from '../src/config.ts';
import { startEphemeralPostgres } from '../src/pg/ephemeral.ts';
import { stopLocalClusters } from '../src/providers/local.ts';
import { Platform, wallMs } from './provision/platform.ts';

/** What the benchmarks share: their settings from the environment, and what they record of the run. */
export function envInt(name: string, fallback: number, min = 0): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be a whole number ≥ ${min}, got "${raw}"`);
  return n;
}

/** The commit measured, `+dirty` when the code under test has uncommitted changes. */
export function gitCommit(): string {
  try {
    const git = (...args: string[]) => execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return git('rev-parse', '--short', 'HEAD') + (git('status', '--porcelain', '--', 'src', 'machines', 'migrations') ? '+dirty' : '');
  } catch {
    return 'unknown';
  }
}

export async function postgresVersion(url: string): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const version = (await client.query<{ v: string }>('select version() as v')).rows[0]?.v ?? '?';
    return version.split(' on ')[0] ?? version;
  } finally {
    await client.end();
  }
}

export interface Answer {
  status: number;
  json: unknown;
  /** wallMs() when the whole answer had arrived. */
  at: number;
}

/**
 * An HTTP call as the platform or an operator makes it; a body that is not JSON comes back
 * as text. `signal` bounds it (AbortSignal.timeout).
 */
export async function call(
  base: string,
  method: string,
  route: string,
  authorization: string,
  body?: unknown,
  signal?: AbortSignal,
): Promise<Answer> {
  const res = await fetch(`${base}${route}`, {
    method,
    headers: { authorization, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  const text = await res.text();
  const at = wallMs();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = text;
  }
  return { status: res.status, json, at };
}

/** Results to `bench/results/<name>.json` and `.md`, and the markdown to stdout. */
export async function writeResults(name: string, results: unknown, md: string): Promise<void> {
  const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results');
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, `${name}.json`), JSON.stringify(results, null, 2) + '\n');
  await fs.writeFile(path.join(dir, `${name}.md`), md);
  console.log(md);
}

/** What a result was measured on, beside the benchmark's own figures. */
export interface Host {
  date: string;
  nproc: number;
  cpu: string;
  memoryGiB: number;
  node: string;
}

export function hostInfo(): Host {
  return {
    date: new Date().toISOString(),
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model ?? '?',
    memoryGiB: os.totalmem() / 2 ** 30,
    node: process.version,
  };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
export const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** The credentials a benchmark's pgfleet takes, made fresh for each run. */
export const ADDON_PASSWORD = randomBytes(24).toString('base64url');
export const BASIC = `Basic ${Buffer.from(`pgfleet:${ADDON_PASSWORD}`).toString('base64')}`;
export const OPERATOR_TOKEN = randomBytes(24).toString('base64url');

export interface BenchSystem {
  controlUrl: string;
  platform: Platform;
  config: Config;
  /** Hand over pgfleet's processes once started, for the way out to stop them. */
  started(running: Running): void;
}

export interface BenchOptions {
  /** pgfleet settings beyond the ones every benchmark needs. */
  env: Record<string, string>;
  watchdogMinutes: number;
  /** The benchmark itself; false when it found something wrong (the exit code says so). */
  main(system: BenchSystem): Promise<boolean | void>;
  /** What the benchmark started on its own, stopped first on the way out (a writer, frozen processes). */
  beforeCleanUp?(): Promise<void>;
}

/**
 * The life of a benchmark process: an ephemeral control Postgres, a stand-in platform and a
 * PGFLEET_HOME of its own, then `main`, then everything stopped, each part even when another
 * fails, also on Ctrl-C, an uncaught error or the watchdog. Exits the process.
 */
export async function runBench(opts: BenchOptions): Promise<never> {
  // Started before anything can fail, so that the way out always has it to stop.
  const controlStarting = startEphemeralPostgres();
  controlStarting.catch(() => undefined);
  const platform = new Platform();
  let home: string | undefined;
  let config: Config | undefined;
  let running: Running | undefined;

  let cleaning: Promise<void> | undefined;
  const cleanUp = () =>
    (cleaning ??= (async () => {
      const attempt = async (what: string, fn: () => Promise<unknown>) => {
        try {
          await fn();
        } catch (err) {
          console.error(`bench: ${what} failed: ${message(err)}`);
        }
      };
      if (opts.beforeCleanUp) await attempt('stopping what the benchmark started', opts.beforeCleanUp);
      if (running) await attempt('stopping pgfleet', () => running!.stop());
      if (home && config) await attempt('stopping local clusters', () => stopLocalClusters(home!, localCluster(config!)));
      await attempt('stopping the platform', () => platform.stop());
      await attempt('stopping the control Postgres', async () => (await controlStarting).stop());
      if (home) await attempt('removing PGFLEET_HOME', () => fs.rm(home!, { recursive: true, force: true }));
    })());

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => void cleanUp().finally(() => process.exit(130)));
  }
  process.on('uncaughtException', (err) => {
    console.error('bench: uncaught exception', err);
    void cleanUp().finally(() => process.exit(1));
  });
  const watchdog = setTimeout(() => {
    console.error(`bench: ${opts.watchdogMinutes} minutes passed, giving up`);
    void cleanUp().finally(() => process.exit(2));
  }, opts.watchdogMinutes * 60_000);

  try {
    const control = await controlStarting;
    await platform.start();
    home = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-bench-home-'));
    await fs.chmod(home, 0o755);
    config = loadConfig({
      DATABASE_URL: control.url,
      PGFLEET_HOME: home,
      PORT: '0',
      LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'silent',
      OPERATOR_TOKEN,
      PGFLEET_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
      ADDON_PASSWORD,
      ADDON_SSO_SALT: randomBytes(24).toString('base64url'),
      ADDON_CLIENT_SECRET: 'bench-client-secret',
      HEROKU_API_URL: platform.url,
      HEROKU_ID_URL: platform.url,
      ...(process.env.PG_BIN ? { PG_BIN: process.env.PG_BIN } : {}),
      ...(process.env.PGFLEET_PG_USER ? { PGFLEET_PG_USER: process.env.PGFLEET_PG_USER } : {}),
      ...opts.env,
    });
    if ((await opts.main({ controlUrl: control.url, platform, config, started: (r) => (running = r) })) === false) process.exitCode = 1;
  } catch (err) {
    console.error(`bench: ${message(err)}`);
    process.exitCode = 1;
  } finally {
    clearTimeout(watchdog);
    await cleanUp();
  }
  process.exit(process.exitCode ?? 0);
}
