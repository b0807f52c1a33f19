import { PROVIDERS } from '../../src/providers/registry.ts';
import { testProviderContext } from '../support/providers.ts';
import { providerContract } from './contract.ts';

/** Every registered provider, made as the processes make it, on a home of its own. */
for (const [name, make] of Object.entries(PROVIDERS)) {
  providerContract(name, async () => {
    const context = await testProviderContext();
    return { provider: make(context), archive: { storeUrl: `file://${context.home}/archive` }, bin: context.bin, cleanup: context.remove };
  });
}
