import { execFileSync } from 'node:child_process';
import pg from 'pg';
import { wallMs } from './provision/platform.ts';

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

/** An HTTP call as the platform or an operator makes it; a body that is not JSON comes back as text. */
export async function call(base: string, method: string, route: string, authorization: string, body?: unknown): Promise<Answer> {
  const res = await fetch(`${base}${route}`, {
    method,
    headers: { authorization, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
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
