import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { checkKey, checkMetadata, type ObjectInfo, type ObjectStore, type StoredObject } from './store.ts';

export interface S3StoreOptions {
  bucket: string;
  /** Put in front of every key; `''` for the bucket's root. A missing trailing `/` is added. */
  prefix: string;
  region: string;
  /** An S3-compatible server's URL (MinIO, Ceph, R2, ...); AWS's own when absent. */
  endpoint?: string;
  /** `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`: most non-AWS servers need it. */
  forcePathStyle?: boolean;
  /** When absent, the SDK's own chain: environment, shared config files, instance or task role. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
}

/** How many times a write is tried when S3 answers 409 ConditionalRequestConflict (a racing conditional write). */
const WRITE_ATTEMPTS = 5;

interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

function sdkError(err: unknown): SdkError {
  return typeof err === 'object' && err !== null ? (err as SdkError) : {};
}

function status(err: unknown): number | undefined {
  return sdkError(err).$metadata?.httpStatusCode;
}

/**
 * An S3 bucket (or an S3-compatible server) as an object store. Objects are stored under
 * `prefix + key`, their metadata as user metadata (`x-amz-meta-*`).
 *
 * `putIfAbsent` sends PutObject with `If-None-Match: *` (S3 conditional writes), so of two
 * writers of one key S3 lets one win and answers the other 412 PreconditionFailed. Some
 * S3-compatible servers ignore that header and overwrite, so the write is preceded by a
 * HeadObject, and an existing object is reported without writing. That still leaves a race
 * on such servers: two writers of one key at the same moment can both see it absent and both
 * write, the later one winning, and both are told `written`. WAL callers write a segment's
 * checksum in its metadata and compare it on `exists`, and two writers of one segment hold the
 * same bytes, so that race loses nothing; a server that honours If-None-Match closes it.
 */
export class S3Store implements ObjectStore {
  readonly description: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;

  constructor(options: S3StoreOptions) {
    if (!options.bucket) throw new Error('an S3 store needs a bucket name');
    this.bucket = options.bucket;
    const prefix = options.prefix.replace(/^\/+/, '');
    this.prefix = prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`;
    const where = options.endpoint ? `at ${redactEndpoint(options.endpoint)}` : `in ${options.region}`;
    this.description = `s3://${this.bucket}/${this.prefix} ${where}`;
    const config: S3ClientConfig = { region: options.region };
    if (options.endpoint) config.endpoint = options.endpoint;
    if (options.forcePathStyle !== undefined) config.forcePathStyle = options.forcePathStyle;
    if (options.credentials) config.credentials = { ...options.credentials };
    this.client = new S3Client(config);
  }

  private objectKey(key: string): string {
    checkKey(key);
    return this.prefix + key;
  }

  async putIfAbsent(
    key: string,
    body: Buffer,
    metadata: Record<string, string>,
  ): Promise<{ outcome: 'written' } | { outcome: 'exists'; existing: ObjectInfo }> {
    const Key = this.objectKey(key);
    checkMetadata(metadata);
    for (let attempt = 1; ; attempt++) {
      // For servers that ignore If-None-Match: without this they would overwrite.
      const existing = await this.head(key);
      if (existing) return { outcome: 'exists', existing };
      try {
        await this.client.send(
          new PutObjectCommand({ Bucket: this.bucket, Key, Body: body, ContentLength: body.length, Metadata: metadata, IfNoneMatch: '*' }),
        );
        return { outcome: 'written' };
      } catch (err) {
        const code = status(err);
        if (code === 412 || sdkError(err).name === 'PreconditionFailed') {
          const existing = await this.head(key);
          if (existing) return { outcome: 'exists', existing };
          // Not to be seen yet (its write is under way) or deleted since: look again.
        } else if (code !== 409 || sdkError(err).name !== 'ConditionalRequestConflict') {
          throw this.failure('write', Key, err);
        }
        if (attempt >= WRITE_ATTEMPTS) throw this.failure('write', Key, err);
        await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
      }
    }
  }

  async get(key: string): Promise<StoredObject | undefined> {
    const Key = this.objectKey(key);
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key }));
      if (!out.Body) throw new Error('the answer had no body');
      const bytes = await out.Body.transformToByteArray();
      return { body: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), metadata: { ...out.Metadata } };
    } catch (err) {
      if (sdkError(err).name === 'NoSuchKey') return undefined;
      throw this.failure('read', Key, err);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const Key = this.objectKey(key);
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }));
      return { key, size: out.ContentLength ?? 0, metadata: { ...out.Metadata } };
    } catch (err) {
      // A HEAD answer has no body, so a missing key and a missing bucket are both a bare 404
      // ("NotFound"); a missing bucket shows up on the next write or list.
      if (status(err) === 404 || sdkError(err).name === 'NotFound' || sdkError(err).name === 'NoSuchKey') return undefined;
      throw this.failure('look up', Key, err);
    }
  }

  async list(prefix: string): Promise<string[]> {
    const Prefix = this.prefix + prefix;
    const keys: string[] = [];
    let ContinuationToken: string | undefined;
    try {
      do {
        const out = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix, ContinuationToken }));
        for (const object of out.Contents ?? []) {
          if (object.Key?.startsWith(Prefix)) keys.push(object.Key.slice(this.prefix.length));
        }
        ContinuationToken = out.IsTruncated ? out.NextContinuationToken : undefined;
      } while (ContinuationToken);
    } catch (err) {
      throw this.failure('list', Prefix, err);
    }
    return keys.sort();
  }

  async delete(key: string): Promise<void> {
    const Key = this.objectKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key }));
    } catch (err) {
      throw this.failure('delete', Key, err);
    }
  }

  /** The SDK's error as one that says which object, what went wrong and what to check. */
  private failure(action: string, objectKey: string, err: unknown): Error {
    const e = sdkError(err);
    const name = e.name ?? 'Error';
    const code = status(err);
    const what = `cannot ${action} s3://${this.bucket}/${objectKey} (${this.description})`;
    // An error answer to HEAD has no body, so the SDK knows only its status.
    const bare = name === 'Unknown' || name === 'UnknownError' || e.message === 'UnknownError';
    const said = bare && code ? `HTTP ${code}` : `${name}${code ? ` (HTTP ${code})` : ''}: ${e.message ?? String(err)}`;
    return new Error(`${what}: ${said}; ${hint(name, code, e.code, this.bucket)}`, { cause: err });
  }
}

function hint(name: string, code: number | undefined, sysCode: string | undefined, bucket: string): string {
  if (name === 'NoSuchBucket') return `check that bucket "${bucket}" exists and the bucket name in the store URL`;
  if (name === 'CredentialsProviderError' || name === 'ProviderError') {
    return 'no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or configure a profile or role for the SDK';
  }
  if (['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken', 'TokenRefreshRequired'].includes(name)) {
    return 'check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) are right and current for this endpoint';
  }
  if (name === 'AccessDenied') {
    return (
      'check that the credentials may s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket ' +
      `on bucket "${bucket}" and its prefix`
    );
  }
  if (code === 403) {
    return (
      'check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ' +
      `and that they may s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on bucket "${bucket}"`
    );
  }
  if (
    name === 'PermanentRedirect' ||
    name === 'AuthorizationHeaderMalformed' ||
    name === 'IllegalLocationConstraintException' ||
    code === 301
  ) {
    return `check the region: bucket "${bucket}" is in another one`;
  }
  if (
    ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH'].includes(sysCode ?? '') ||
    name === 'TimeoutError'
  ) {
    return 'check the endpoint URL and that the server is running and reachable';
  }
  if (name === 'NotImplemented' || code === 501) return 'the server does not support this S3 call: check that it is S3-compatible';
  if (code !== undefined && code >= 500) return 'the server failed: try again, and check its health';
  return 'check the store URL, the credentials and the server';
}

/** An endpoint URL without any user:password in it. */
function redactEndpoint(endpoint: string): string {
  try {
    const url = new URL(endpoint);
    url.username = '';
    url.password = '';
    return url.toString().replace(/\/$/, '');
  } catch {
    return '(an unparsable endpoint)';
  }
}
