#!/usr/bin/env node
// The CLI is TypeScript run through tsx, so the same sources serve `npm start`, the
// Procfile and `npx pgfleet` with no build step.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/processes/cli.ts');
process.exitCode = await main(process.argv.slice(2));
