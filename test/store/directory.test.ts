import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DirectoryStore } from '../../src/store/directory.ts';
import { storeContract } from './contract.ts';

storeContract(
  'directory',
  async () => {
    const root = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-store-'));
    return {
      store: new DirectoryStore(root),
      cleanup: () => fs.rm(root, { recursive: true, force: true }),
    };
  },
  { exactlyOneWriter: true },
);
