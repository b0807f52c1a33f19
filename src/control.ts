import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import type { PgCluster } from './pg/cluster.ts';
import { freePort } from './pg/ports.ts';

interface ControlState {
  port: number;
  password: string;
}

async function readOrCreate<T>(file: string, create: () => Promise<T> | T): Promise<T> {
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as T;
  const value = await create();
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, JSON.stringify(value, null, 2), { mode: 0o600 });
  return value;
}

export function controlDataDir(home: string): string {
  return path.join(home, 'control', 'data');
}

/**
 * The embedded control database: with DATABASE_URL unset, pgfleet keeps its own Postgres
 * under PGFLEET_HOME/control, on the port and with the password it chose the first time.
 */
export async function startEmbeddedControl(home: string, cluster: PgCluster): Promise<string> {
  const state = await readOrCreate<ControlState>(path.join(home, 'control.json'), async () => ({
    port: await freePort(),
    password: randomBytes(24).toString('base64url'),
  }));
  const dataDir = controlDataDir(home);
  await cluster.adopt(dataDir);
  await cluster.init({
    dataDir,
    host: '127.0.0.1',
    port: state.port,
    superuserPassword: state.password,
    settings: { max_connections: 200 },
  });
  await cluster.start(dataDir);
  const admin = new pg.Client({ host: '127.0.0.1', port: state.port, user: 'postgres', password: state.password, database: 'postgres' });
  await admin.connect();
  try {
    const { rowCount } = await admin.query(`select 1 from pg_database where datname = 'pgfleet'`);
    if (rowCount === 0) await admin.query('create database pgfleet');
  } finally {
    await admin.end();
  }
  return `postgres://postgres:${encodeURIComponent(state.password)}@127.0.0.1:${state.port}/pgfleet`;
}

function readSecrets(home: string): Record<string, string> {
  const file = path.join(home, 'secrets.json');
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>) : {};
}

/** A secret pgfleet made once and keeps in PGFLEET_HOME/secrets.json (mode 600). */
async function keptSecret(home: string, name: string, bytes: number): Promise<string> {
  const file = path.join(home, 'secrets.json');
  const secrets = readSecrets(home);
  if (secrets[name]) return secrets[name];
  secrets[name] = randomBytes(bytes).toString('base64url');
  await fs.mkdir(home, { recursive: true });
  await fs.writeFile(file, JSON.stringify(secrets, null, 2), { mode: 0o600 });
  return secrets[name];
}

/** OPERATOR_TOKEN, or the one pgfleet made and keeps under PGFLEET_HOME. */
export async function operatorToken(home: string, fromEnv: string | undefined): Promise<string> {
  return fromEnv ?? keptSecret(home, 'operatorToken', 24);
}

/** OPERATOR_TOKEN, or the one `pgfleet start` keeps under PGFLEET_HOME; never a new one. */
export function existingOperatorToken(home: string, fromEnv: string | undefined): string | undefined {
  return fromEnv ?? readSecrets(home).operatorToken;
}

/**
 * PGFLEET_ENCRYPTION_KEY, or the key pgfleet made and keeps under PGFLEET_HOME. Processes
 * on several machines must share one key through the environment.
 */
export async function encryptionKey(home: string, fromEnv: Buffer | undefined): Promise<Buffer> {
  return fromEnv ?? Buffer.from(await keptSecret(home, 'encryptionKey', 32), 'base64url');
}

/** ADDON_PASSWORD and ADDON_SSO_SALT, or the ones pgfleet made and keeps under PGFLEET_HOME. */
export async function addonSecrets(
  home: string,
  fromEnv: { password: string | undefined; ssoSalt: string | undefined },
): Promise<{ password: string; ssoSalt: string }> {
  return {
    password: fromEnv.password ?? (await keptSecret(home, 'addonPassword', 24)),
    ssoSalt: fromEnv.ssoSalt ?? (await keptSecret(home, 'addonSsoSalt', 24)),
  };
}
