import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface PlatformCall {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
}

/**
 * A stand-in for the platform's API (Heroku's, or anything speaking it): it records every
 * call, exchanges OAuth grants for tokens, and answers config and action calls, or fails
 * them while `failing` is set.
 */
export class FakePlatform {
  readonly calls: PlatformCall[] = [];
  failing = false;
  private server: Server | undefined;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        this.calls.push({ method: req.method!, path: req.url!, headers: req.headers, body });
        if (this.failing) {
          res.writeHead(503, { 'content-type': 'application/json' }).end('{"id":"unavailable","message":"try later"}');
        } else if (req.url === '/oauth/token') {
          res
            .writeHead(200, { 'content-type': 'application/json' })
            .end(JSON.stringify({ access_token: 'access-1', refresh_token: 'refresh-1', expires_in: 28800, token_type: 'Bearer' }));
        } else {
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        }
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  callsTo(method: string, pathPart: string): PlatformCall[] {
    return this.calls.filter((c) => c.method === method && c.path.includes(pathPart));
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }
}
