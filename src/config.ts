import { accessSync, constants, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { LogFormat } from './log.ts';
import { parseLag } from './health.ts';
import { PROVIDERS } from './providers/registry.ts';

/** Configuration comes from the environment and is checked once, at start-up. */
export interface ProbeConfig {
  timeoutMs: number;
  hangProbes: number;
  /**
   * Milliseconds commits may wait for a synchronous standby that does not answer before the
   * standby counts as stalled: its primary then stops waiting for it (or, on a strict plan,
   * the stall is recorded and paged).
   */
  syncStallMs: number;
}

export interface Config {
  /** Control database; unset means pgfleet starts its own under `home`. */
  databaseUrl: string | undefined;
  home: string;
  port: number;
  /** Address the web process binds; 0.0.0.0 on a platform that routes to it. */
  host: string;
  operatorToken: string | undefined;
  /** Queues this worker takes jobs from; undefined means every queue. */
  queues: string[] | undefined;
  concurrency: number;
  /** Seconds between observations of a live entity. */
  observeInterval: number;
  /**
   * How a server is judged down: each probe waits `timeoutMs` for an answer, and a server
   * whose process lives but which fails `hangProbes` probes in a row counts as hung.
   */
  probe: ProbeConfig;
  /** How far behind its primary a standby may replay and still serve the read-only URL. */
  readOnlyMaxLagBytes: number;
  /** `max_connections` of a new shared server: its tenants' connection limits must fit in it. */
  sharedMaxConnections: number;
  /** The provider (src/providers/registry.ts) a new database's servers are made on. */
  provider: string;
  /** Seconds a claimed job may go without its worker renewing the lease before another worker may take it again. */
  jobLease: number;
  /** Which worker this is across restarts: a worker started releases what the last one of its name held. */
  workerName: string;
  observationRetentionDays: number;
  /** Seconds a deleted server's WAL archive and backups are kept before they are removed. */
  archiveRetentionSeconds: number;
  pgBin: string | undefined;
  /** The pgbouncer binary; unset: the one on the PATH (or /usr/sbin), else no poolers. */
  pgbouncerBin: string | undefined;
  /** 32 bytes that seal credentials at rest; unset means the one kept under `home`. */
  encryptionKey: Buffer | undefined;
  /** The unprivileged user that runs Postgres when pgfleet runs as root. */
  pgUser: string | undefined;
  /** The user that runs the embedded control database when pgfleet runs as root: not `pgUser`. */
  controlPgUser: string;
  logLevel: string;
  logFormat: LogFormat;
  addon: AddonConfig;
  paging: PagingConfig;
  /** Where servers archive WAL: `file:///dir` or `s3://bucket/prefix?…`; unset: PGFLEET_HOME/archive. */
  storeUrl: string | undefined;
  /** AWS_* credentials for an S3 store, handed to the archiver (which runs without our environment). */
  storeEnv: Record<string, string>;
  /** Where a process without `web` serves its /metrics (a worker's job durations); unset: nowhere. */
  metricsPort: number | undefined;
  tls: TlsConfig;
}

/** How long servers' TLS certificates live, and how long before they expire they are replaced. */
export interface TlsConfig {
  certDays: number;
  renewDays: number;
}

/** Where pages go, and how long an entity may stay in a bad state before one does. */
export interface PagingConfig {
  /** A PagerDuty Events v2-shaped webhook; unset means pages are recorded but not sent. */
  webhookUrl: string | undefined;
  routingKey: string;
  /** Overrides every state's deadline, in seconds: for tests and drills. */
  stuckAfter: number | undefined;
  /** Seconds trouble must last before its customers are told; shorter blips are not news to them. */
  noticeGrace: number;
  /** Seconds a database may run without a synchronous copy of its commits before a human is paged. */
  syncPageAfter: number;
}

/** The Heroku add-on partner API: who may call it and where the platform answers. */
export interface AddonConfig {
  /** The add-on id (slug): the Basic-auth user, and the config var prefix. */
  id: string;
  /** Unset means the one pgfleet made and keeps under `home`. */
  password: string | undefined;
  ssoSalt: string | undefined;
  /** The manifest's OAuth client secret, to exchange a provision's grant for tokens. */
  clientSecret: string | undefined;
  /** The platform API that callback URLs must point into. */
  platformApiUrl: string;
  /** Where OAuth grants are exchanged. */
  platformIdUrl: string;
  /** How this deployment is reached from outside, for the manifest. */
  publicUrl: string | undefined;
  /** Seconds a provision or plan change may wait to answer with the config before it answers 202. */
  answerWithin: number;
}

/** The add-on config with its secrets settled (from the environment or kept under `home`). */
export type Addon = AddonConfig & { password: string; ssoSalt: string };

/** `PGFLEET_URL` for the add-on id `pgfleet`: upper case, `-` becomes `_`. */
export function configVarPrefix(addonId: string): string {
  return addonId.toUpperCase().replace(/-/g, '_');
}

export class ConfigError extends Error {}

type Env = Record<string, string | undefined>;

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, not ${JSON.stringify(raw)}`);
  }
  return value;
}

function provider(env: Env): string {
  const name = nonEmpty(env, 'PGFLEET_PROVIDER') ?? 'local';
  const names = Object.keys(PROVIDERS);
  if (!names.includes(name)) throw new ConfigError(`PGFLEET_PROVIDER must be one of ${names.join(', ')}, not ${JSON.stringify(name)}`);
  return name;
}

/** A size in bytes, written as Patroni's `lag` is: `1048576`, `16MB`, `1GB`. */
function size(env: Env, name: string, fallback: string): number {
  const raw = nonEmpty(env, name) ?? fallback;
  const bytes = parseLag(raw);
  if (bytes === undefined) throw new ConfigError(`${name} must be a size such as 16MB or 1048576, not ${JSON.stringify(raw)}`);
  return bytes;
}

/** A path to a program, checked at start-up, before anything is started. */
function executableFile(env: Env, name: string): string | undefined {
  const file = nonEmpty(env, name);
  if (file === undefined) return undefined;
  try {
    accessSync(file, constants.X_OK);
    if (!statSync(file).isFile()) throw new Error('not a file');
  } catch {
    throw new ConfigError(`${name}=${file} is not an executable file: point it at the program, or unset it`);
  }
  return file;
}

function nonEmpty(env: Env, name: string): string | undefined {
  const raw = env[name];
  return raw === undefined || raw.trim() === '' ? undefined : raw.trim();
}

function encryptionKey(env: Env): Buffer | undefined {
  const raw = nonEmpty(env, 'PGFLEET_ENCRYPTION_KEY');
  if (raw === undefined) return undefined;
  const key = Buffer.from(raw, 'base64');
  if (key.length !== 32)
    throw new ConfigError('PGFLEET_ENCRYPTION_KEY must be 32 random bytes in base64, e.g. from `openssl rand -base64 32`');
  return key;
}

function secret(env: Env, name: string): string | undefined {
  const value = nonEmpty(env, name);
  if (value !== undefined && value.length < 16) throw new ConfigError(`${name} must be at least 16 characters long`);
  return value;
}

function httpUrl(env: Env, name: string, fallback: string | undefined): string | undefined {
  const raw = nonEmpty(env, name) ?? fallback;
  if (raw === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`${name} must be an http(s) URL such as https://api.heroku.com, not ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new ConfigError(`${name} must be an http(s) URL, not ${JSON.stringify(raw)}`);
  return raw.replace(/\/+$/, '');
}

function storeUrl(env: Env): string | undefined {
  const raw = nonEmpty(env, 'PGFLEET_STORE_URL');
  if (raw !== undefined && !/^(file:\/\/\/|s3:\/\/[a-z0-9.-]+)/.test(raw)) {
    throw new ConfigError('PGFLEET_STORE_URL must be file:///absolute/dir or s3://bucket/prefix?region=…&endpoint=…&path_style=true');
  }
  return raw;
}

/**
 * 90-day certificates renewed 30 days ahead, as Let's Encrypt does: a renewal that keeps
 * failing has a month to be noticed before any client sees an expired certificate.
 */
function tlsConfig(env: Env): TlsConfig {
  const certDays = integer(env, 'PGFLEET_TLS_CERT_DAYS', 90, 1, 825);
  const renewDays = integer(env, 'PGFLEET_TLS_RENEW_DAYS', Math.min(30, certDays - 1), 0, 824);
  if (renewDays >= certDays) {
    throw new ConfigError(
      `PGFLEET_TLS_RENEW_DAYS (${renewDays}) must be less than PGFLEET_TLS_CERT_DAYS (${certDays}), ` +
        'or every certificate would be due as soon as it is made',
    );
  }
  return { certDays, renewDays };
}

function addonConfig(env: Env): AddonConfig {
  const id = nonEmpty(env, 'ADDON_ID') ?? 'pgfleet';
  if (!/^[a-z][a-z0-9-]{1,49}$/.test(id))
    throw new ConfigError('ADDON_ID must be lower-case letters, digits and "-", starting with a letter, such as "pgfleet"');
  return {
    id,
    password: secret(env, 'ADDON_PASSWORD'),
    ssoSalt: secret(env, 'ADDON_SSO_SALT'),
    clientSecret: nonEmpty(env, 'ADDON_CLIENT_SECRET'),
    platformApiUrl: httpUrl(env, 'HEROKU_API_URL', 'https://api.heroku.com')!,
    platformIdUrl: httpUrl(env, 'HEROKU_ID_URL', 'https://id.heroku.com')!,
    publicUrl: httpUrl(env, 'PGFLEET_PUBLIC_URL', undefined),
    answerWithin: integer(env, 'PGFLEET_ANSWER_WITHIN', 10, 0, 25),
  };
}

/**
 * PGFLEET_WORKER_NAME, else Heroku's DYNO (`worker.1`), else this host's name with
 * `.worker`: two workers on one host need names of their own. At most 38 characters, so
 * that `pgfleet worker <name>#<8 hex>` fits in an application_name.
 */
function workerName(env: Env): string {
  const given = nonEmpty(env, 'PGFLEET_WORKER_NAME');
  const name =
    given ??
    nonEmpty(env, 'DYNO') ??
    `${os
      .hostname()
      .replace(/[^A-Za-z0-9._-]/g, '-')
      .slice(0, 31)}.worker`;
  if (!/^[A-Za-z0-9._-]{1,38}$/.test(name)) {
    throw new ConfigError(
      `${given !== undefined ? 'PGFLEET_WORKER_NAME' : 'DYNO'} must be at most 38 letters, digits, dots, dashes or underscores ` +
        '(it names the worker, PGFLEET_WORKER_NAME)',
    );
  }
  return name;
}

export function loadConfig(env: Env = process.env): Config {
  const databaseUrl = nonEmpty(env, 'DATABASE_URL');
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError('DATABASE_URL must be a postgres:// URL');
  }
  const token = nonEmpty(env, 'OPERATOR_TOKEN');
  if (token !== undefined && token.length < 16) {
    throw new ConfigError('OPERATOR_TOKEN must be at least 16 characters long');
  }
  const queues = nonEmpty(env, 'QUEUES')
    ?.split(',')
    .map((q) => q.trim())
    .filter(Boolean);
  if (queues !== undefined && queues.some((q) => !/^[a-z][a-z0-9_-]*$/.test(q))) {
    throw new ConfigError('QUEUES must be a comma-separated list of queue names such as "default,observe"');
  }
  const logLevel = nonEmpty(env, 'LOG_LEVEL') ?? 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    throw new ConfigError('LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent');
  }
  const logFormat = nonEmpty(env, 'LOG_FORMAT') ?? 'json';
  if (logFormat !== 'json' && logFormat !== 'logfmt') throw new ConfigError('LOG_FORMAT must be json or logfmt');
  return {
    databaseUrl,
    home: path.resolve(nonEmpty(env, 'PGFLEET_HOME') ?? '.pgfleet'),
    port: integer(env, 'PORT', 5000, 0, 65535),
    host: nonEmpty(env, 'HOST') ?? '127.0.0.1',
    operatorToken: token,
    queues: queues?.length ? queues : undefined,
    concurrency: integer(env, 'WORKER_CONCURRENCY', 10, 1, 1000),
    observeInterval: integer(env, 'PGFLEET_OBSERVE_INTERVAL', 5, 1, 3600),
    readOnlyMaxLagBytes: size(env, 'PGFLEET_READONLY_MAX_LAG', '16MB'),
    probe: {
      timeoutMs: integer(env, 'PGFLEET_PROBE_TIMEOUT_MS', 1000, 100, 60_000),
      hangProbes: integer(env, 'PGFLEET_HANG_PROBES', 3, 1, 100),
      syncStallMs: integer(env, 'PGFLEET_SYNC_STALL_MS', 3000, 500, 600_000),
    },
    sharedMaxConnections: integer(env, 'PGFLEET_SHARED_MAX_CONNECTIONS', 300, 40, 10_000),
    provider: provider(env),
    jobLease: integer(env, 'PGFLEET_JOB_LEASE', 10, 1, 86400),
    workerName: workerName(env),
    observationRetentionDays: integer(env, 'PGFLEET_OBSERVATION_RETENTION_DAYS', 2, 1, 365),
    archiveRetentionSeconds: integer(env, 'PGFLEET_ARCHIVE_RETENTION_SECONDS', 7 * 86_400, 1, 10 * 365 * 86_400),
    pgBin: nonEmpty(env, 'PG_BIN'),
    pgbouncerBin: executableFile(env, 'PGBOUNCER_BIN'),
    encryptionKey: encryptionKey(env),
    pgUser: nonEmpty(env, 'PGFLEET_PG_USER'),
    controlPgUser: nonEmpty(env, 'PGFLEET_CONTROL_PG_USER') ?? 'pgfleet-control',
    logLevel,
    logFormat,
    addon: addonConfig(env),
    storeUrl: storeUrl(env),
    storeEnv: Object.fromEntries(
      ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_REGION'].flatMap((k) => (env[k] ? [[k, env[k]!]] : [])),
    ),
    metricsPort: nonEmpty(env, 'METRICS_PORT') === undefined ? undefined : integer(env, 'METRICS_PORT', 0, 0, 65535),
    tls: tlsConfig(env),
    paging: {
      webhookUrl: httpUrl(env, 'PAGER_WEBHOOK_URL', undefined),
      routingKey: nonEmpty(env, 'PAGER_ROUTING_KEY') ?? 'pgfleet',
      stuckAfter: nonEmpty(env, 'PGFLEET_STUCK_AFTER') === undefined ? undefined : integer(env, 'PGFLEET_STUCK_AFTER', 0, 1, 86400),
      noticeGrace: integer(env, 'PGFLEET_NOTICE_GRACE', 30, 0, 3600),
      syncPageAfter: integer(env, 'PGFLEET_SYNC_PAGE_AFTER', 60, 1, 86400),
    },
  };
}
