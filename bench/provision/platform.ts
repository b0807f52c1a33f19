import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';

/** Milliseconds on one clock with the database's: wall time, sub-millisecond. */
export const wallMs = () => performance.timeOrigin + performance.now();

/** The platform's stand-in: records when each call arrived, and lets the bench wait for one. */

export interface PlatformCall {
  method: string;
  path: string;
  body: string;
  /** wallMs() when the request arrived. */
  at: number;
}

export class Platform {
  readonly calls: PlatformCall[] = [];
  url = '';
  private server: Server | undefined;
  private readonly waiters = new Set<() => void>();

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const at = wallMs();
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        this.calls.push({ method: req.method ?? '', path: req.url ?? '', body, at });
        const answer =
          req.url === '/oauth/token'
            ? { access_token: 'access-1', refresh_token: 'refresh-1', expires_in: 28800, token_type: 'Bearer' }
            : {};
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
        for (const check of [...this.waiters]) check();
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  find(method: string, pathPart: string): PlatformCall | undefined {
    return this.calls.find((c) => c.method === method && c.path.includes(pathPart));
  }

  waitFor(method: string, pathPart: string, timeoutMs: number): Promise<PlatformCall> {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      const check = () => {
        const hit = this.find(method, pathPart);
        if (hit) {
          done();
          resolve(hit);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`the platform heard no ${method} ${pathPart} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
