import { LocalProvider } from './local.ts';
import { LoopbackProvider } from './loopback.ts';
import type { Provider, ProviderContext } from './provider.ts';

/**
 * Every provider, by the name a server row carries (`servers.provider`, `--provider` on the
 * command line). This is the one place a provider is added: its own files (a provider in
 * src/providers/, a host in src/hosts/ when its servers do not run on this machine) and one
 * line here. The contract suite (test/providers/contract.test.ts) runs against each.
 */
export const PROVIDERS = {
  local: (context: ProviderContext) => new LocalProvider(context),
  loopback: (context: ProviderContext) => new LoopbackProvider(context),
} satisfies Record<string, (context: ProviderContext) => Provider>;

/** The providers a process has, by name. */
export type Providers = Record<string, Provider>;

/** One of each registered provider. */
export function makeProviders(context: ProviderContext): Providers {
  return Object.fromEntries(Object.entries(PROVIDERS).map(([name, make]) => [name, make(context)]));
}

/** The provider a server is on; a server on a provider this process does not have is an error that names it. */
export function providerOf(providers: Providers, server: { id: string; provider: string }): Provider {
  const provider = providers[server.provider];
  if (!provider) throw new Error(`server ${server.id} uses provider "${server.provider}", which this process does not have`);
  return provider;
}
