import type { Pool } from '../../src/db.ts';
import { findPlan } from '../../src/plans.ts';
import { createResource, type ProvisionRequest } from '../../src/resources/rows.ts';
import { TEST_SEALER } from './system.ts';

/**
 * A resource row (and its machine) as the platform would provision it in region `us`, with
 * no name, callback, grant or leader unless `overrides` gives them.
 */
export function createTestResource(
  pool: Pool,
  id: string,
  plan: string,
  overrides: Partial<Omit<ProvisionRequest, 'id' | 'plan'>> = {},
): ReturnType<typeof createResource> {
  return createResource(pool, TEST_SEALER, {
    id,
    plan: findPlan(plan)!,
    region: 'us',
    awsRegion: 'us-east-1',
    name: null,
    herokuId: null,
    callbackUrl: null,
    options: {},
    oauthGrant: null,
    follows: null,
    ...overrides,
  });
}
