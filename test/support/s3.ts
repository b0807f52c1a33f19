import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

/** The few parts of s3rver (a CommonJS package without types) used here. */
interface S3rverApp {
  configureBuckets(): Promise<unknown>;
  callback(): http.RequestListener;
  store: { existsObject(bucket: string, key: string): Promise<boolean> };
  logger: { close(): void; exceptions: { unhandle(): void } };
}
type S3rverClass = new (options: Record<string, unknown>) => S3rverApp;

const S3rver = createRequire(import.meta.url)('s3rver') as S3rverClass;

// The SDK warns once per process that its releases after January 2027 need Node 22: known, and
// not what the tests are about.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** s3rver knows one access key and does not check SigV4 signatures, so any secret does. */
export const S3_ACCESS_KEY_ID = 'S3RVER';
export const S3_SECRET_ACCESS_KEY = 'S3RVER';

export interface S3Server {
  /** A store URL for `openStore`, with no prefix: add one as `${url.replace('?', '/prefix?')}` or use `storeUrl`. */
  url: string;
  endpoint: string;
  bucket: string;
  /** The environment `openStore` takes the credentials from. */
  env: Record<string, string>;
  /** A store URL for a prefix in this server's bucket. */
  storeUrl(prefix: string): string;
  stop(): Promise<void>;
}

export interface S3ServerOptions {
  /**
   * s3rver ignores `If-None-Match` on PUT and overwrites. With this, a PUT carrying
   * `If-None-Match: *` is answered 412 PreconditionFailed, as S3 does, when the key exists or
   * another such PUT of it is under way: the real S3 behaviour, for testing the client's side of it.
   */
  conditionalWrites?: boolean;
}

/**
 * s3rver (an S3-compatible HTTP server written in Node) on 127.0.0.1 on a port the kernel
 * picks, keeping its objects in a fresh temporary directory, with one bucket. Silent.
 */
export async function startS3(options: S3ServerOptions = {}): Promise<S3Server> {
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-s3-'));
  const bucket = 'pgfleet-test';
  let app: S3rverApp;
  let server: http.Server | undefined;
  try {
    app = new S3rver({
      directory,
      silent: true,
      address: '127.0.0.1',
      vhostBuckets: false,
      configureBuckets: [{ name: bucket, configs: [] }],
    });
    await app.configureBuckets();
    const handle = app.callback();
    const listener = options.conditionalWrites ? conditionalWrites(app, handle) : handle;
    server = http.createServer(listener);
    await new Promise<void>((resolve, reject) => {
      server!.once('error', reject);
      server!.listen(0, '127.0.0.1', () => resolve());
    });
  } catch (err) {
    server?.close();
    await fs.rm(directory, { recursive: true, force: true });
    throw err;
  }
  const running = server;
  const { port } = running.address() as AddressInfo;
  const endpoint = `http://127.0.0.1:${port}`;
  const storeUrl = (prefix: string) => `s3://${bucket}/${prefix}?region=us-east-1&endpoint=${encodeURIComponent(endpoint)}&path_style=true`;
  let stopped = false;
  return {
    url: storeUrl(''),
    endpoint,
    bucket,
    env: { AWS_ACCESS_KEY_ID: S3_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: S3_SECRET_ACCESS_KEY },
    storeUrl,
    async stop() {
      if (stopped) return;
      stopped = true;
      const closed = new Promise<void>((resolve) => running.close(() => resolve()));
      // The SDK keeps connections alive: close them, or close() waits for their timeout.
      running.closeAllConnections();
      await closed;
      app.logger.exceptions.unhandle();
      app.logger.close();
      await fs.rm(directory, { recursive: true, force: true });
    },
  };
}

/**
 * A front to s3rver that answers as S3 does where s3rver does not: a PUT with `If-None-Match: *`
 * is refused with 412 PreconditionFailed when the key exists or another such PUT of it is under
 * way, and an object being written is not there to GET or HEAD until its write is done (s3rver
 * writes in place and would show it half written).
 */
function conditionalWrites(app: S3rverApp, handle: http.RequestListener): http.RequestListener {
  const writing = new Set<string>();
  const answer = (req: http.IncomingMessage, res: http.ServerResponse, status: number, code?: string, key?: string) => {
    req.resume();
    req.on('end', () => {
      const body =
        req.method === 'HEAD' || !code
          ? ''
          : `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${
              code === 'NoSuchKey' ? 'The specified key does not exist.' : 'At least one of the pre-conditions you specified did not hold'
            }</Message><Key>${key}</Key></Error>`;
      res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  };
  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://s3');
    const match = /^\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (!match) return void handle(req, res);
    const bucket = decodeURIComponent(match[1]!);
    const key = decodeURIComponent(match[2]!);
    const id = `${bucket}/${key}`;
    if ((req.method === 'GET' || req.method === 'HEAD') && writing.has(id)) return answer(req, res, 404, 'NoSuchKey', key);
    const guarded =
      req.method === 'PUT' &&
      req.headers['if-none-match'] === '*' &&
      !req.headers['x-amz-copy-source'] &&
      !url.searchParams.has('uploadId');
    if (!guarded) return void handle(req, res);
    if (writing.has(id)) return answer(req, res, 412, 'PreconditionFailed', key);
    writing.add(id);
    res.on('close', () => writing.delete(id));
    app.store.existsObject(bucket, key).then(
      (exists) => (exists ? answer(req, res, 412, 'PreconditionFailed', key) : handle(req, res)),
      (err: unknown) => res.destroy(err as Error),
    );
  };
}
