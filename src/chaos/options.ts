import { parseKinds, type FaultKind } from './faults.ts';

export interface ChaosSettings {
  faults: number;
  seed: number;
  kinds: FaultKind[];
  wholeBoundS: number;
}

/**
 * A chaos run's settings from flags (`--faults 10`, `--seed 7`, `--kinds a,b`,
 * `--whole-bound 60`), else the environment (CHAOS_FAULTS, CHAOS_SEED, CHAOS_KINDS,
 * CHAOS_WHOLE_BOUND_S), else the defaults: 100 faults of every kind `available`, a seed
 * from the clock (printed, so a run can be made again), 60 s to be whole again.
 */
export function chaosSettings(args: readonly string[], env: NodeJS.ProcessEnv, available: readonly FaultKind[]): ChaosSettings {
  const flag = (name: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const int = (name: string, envName: string, fallback: number, min: number) => {
    const raw = flag(name) ?? env[envName];
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} (${envName}) must be a whole number ≥ ${min}, got "${raw}"`);
    return n;
  };
  return {
    faults: int('faults', 'CHAOS_FAULTS', 100, 1),
    seed: int('seed', 'CHAOS_SEED', Date.now() % 2 ** 31, 0),
    kinds: parseKinds(flag('kinds') ?? env.CHAOS_KINDS, available),
    wholeBoundS: int('whole-bound', 'CHAOS_WHOLE_BOUND_S', 60, 1),
  };
}
