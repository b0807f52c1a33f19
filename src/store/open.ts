import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DirectoryStore } from './directory.ts';
import { S3Store, type S3StoreOptions } from './s3.ts';
import { checkKey, type ObjectStore } from './store.ts';

const FORMS =
  'a store URL is one of: file:///absolute/path; /absolute/path; ' +
  's3://bucket[/prefix][?region=REGION][&endpoint=http://host:port][&path_style=true] ' +
  '(credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, else the AWS SDK default chain)';

/**
 * The URL for an error message: its scheme, host and path, without any user:password and
 * without its query (which may hold an endpoint with credentials in it).
 */
function shown(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname}${parsed.search ? '?...' : ''}`;
  } catch {
    return url.includes('@') ? '(not shown: it has an "@" in it)' : url;
  }
}

function invalid(url: string, why: string): Error {
  return new Error(`store URL "${shown(url)}" ${why}: ${FORMS}`);
}

/** Where servers archive their WAL: a store URL and, for S3, its credentials. */
export interface ArchiveTarget {
  storeUrl: string;
  env?: Record<string, string>;
}

/** Where a server's WAL and base backups live in the archive's store: its followers restore from there too. */
export function serverArchivePrefix(serverId: string): string {
  return `servers/${serverId}`;
}

/** The archive's store, its credentials taking precedence over this process's environment. */
export function openArchive(target: ArchiveTarget): ObjectStore {
  return openStore(target.storeUrl, { ...process.env, ...target.env });
}

/**
 * The object store a URL names: a directory (`file:///abs/path` or `/abs/path`) or an S3
 * bucket (`s3://bucket/prefix?region=&endpoint=&path_style=`). S3 credentials come from
 * `env`'s AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) when both are
 * set, else from the SDK's default chain; never from the URL.
 */
export function openStore(url: string, env: NodeJS.ProcessEnv = process.env): ObjectStore {
  if (path.isAbsolute(url)) return new DirectoryStore(path.resolve(url));
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalid(url, 'is neither an absolute path nor a URL');
  }
  if (parsed.protocol === 'file:') {
    if (parsed.search || parsed.hash) throw invalid(url, 'has a query or fragment, which a file URL does not take');
    let dir: string;
    try {
      dir = fileURLToPath(parsed);
    } catch (err) {
      throw invalid(url, `is not a local file URL (${(err as Error).message})`);
    }
    return new DirectoryStore(path.resolve(dir));
  }
  if (parsed.protocol === 's3:') return new S3Store(s3Options(url, parsed, env));
  throw invalid(url, `has scheme ${parsed.protocol.replace(/:$/, '')}`);
}

function s3Options(url: string, parsed: URL, env: NodeJS.ProcessEnv): S3StoreOptions {
  if (parsed.username || parsed.password) {
    throw invalid(url, 'holds credentials: put them in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead');
  }
  if (parsed.hash) throw invalid(url, 'has a fragment');
  const bucket = decodeURIComponent(parsed.hostname);
  if (parsed.port || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw invalid(
      url,
      `names bucket "${bucket}${parsed.port ? `:${parsed.port}` : ''}", which is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')`,
    );
  }
  let rawPrefix: string;
  try {
    rawPrefix = decodeURIComponent(parsed.pathname).replace(/^\/+/, '').replace(/\/+$/, '');
  } catch {
    throw invalid(url, 'has a prefix that is not valid percent-encoding');
  }
  if (rawPrefix) {
    try {
      checkKey(rawPrefix);
    } catch {
      throw invalid(url, `has prefix "${rawPrefix}", which is not a plain relative path`);
    }
  }
  const options: S3StoreOptions = {
    bucket,
    prefix: rawPrefix ? `${rawPrefix}/` : '',
    region: env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1',
  };
  for (const [name, value] of parsed.searchParams) {
    switch (name) {
      case 'region':
        if (!/^[a-z0-9-]+$/.test(value)) throw invalid(url, `has region "${value}"`);
        options.region = value;
        break;
      case 'endpoint': {
        let endpoint: URL;
        try {
          endpoint = new URL(value);
        } catch {
          throw invalid(url, 'has an endpoint that is not a URL');
        }
        if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:')
          throw invalid(url, 'has an endpoint that is not http:// or https://');
        if (endpoint.username || endpoint.password)
          throw invalid(url, 'has credentials in its endpoint: put them in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead');
        options.endpoint = value;
        break;
      }
      case 'path_style':
        if (!['true', 'false', '1', '0'].includes(value)) throw invalid(url, `has path_style=${value} (true or false)`);
        options.forcePathStyle = value === 'true' || value === '1';
        break;
      default:
        throw invalid(url, `has unknown parameter "${name}"`);
    }
  }
  if (env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) {
    options.credentials = { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY };
    if (env.AWS_SESSION_TOKEN) options.credentials.sessionToken = env.AWS_SESSION_TOKEN;
  }
  return options;
}
