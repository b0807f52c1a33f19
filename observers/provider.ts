import type { Provider, ServerRecord } from '../src/providers/provider.ts';

/** Whether the host and the Postgres process are alive, as the server's host sees them; a server not placed yet has no host. */
export async function observeProvider(provider: Provider, server: ServerRecord): Promise<Record<string, string>> {
  try {
    if (server.port === null) return { placed: 'false' };
    return await provider.host(server).observe();
  } catch (err) {
    return { provider_error: (err as Error).message.slice(0, 500) };
  }
}
