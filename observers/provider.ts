import type { Provider, ServerRecord } from '../src/providers/provider.ts';

/** Whether the host and the Postgres process are alive, as the provider sees them. */
export async function observeProvider(provider: Provider, server: ServerRecord): Promise<Record<string, string>> {
  try {
    return await provider.observe(server);
  } catch (err) {
    return { provider_error: (err as Error).message.slice(0, 500) };
  }
}
