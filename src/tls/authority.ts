import type { Queryable } from '../db.ts';
import type { Sealer } from '../sealer.ts';
import { createAuthority, type KeyedCertificate } from './certificates.ts';

/**
 * The deployment's certificate authority, made by whichever process asks first. Several
 * processes may start together: each makes one, the first insert wins, and all of them
 * read back the winner, so every server's certificate chains to the one CA customers hold.
 */
export async function certificateAuthority(db: Queryable, sealer: Sealer): Promise<KeyedCertificate> {
  const existing = await storedAuthority(db, sealer);
  if (existing) return existing;
  const made = await createAuthority();
  await db.query('insert into certificate_authority (certificate, key_sealed) values ($1, $2) on conflict (singleton) do nothing', [
    made.certificate,
    sealer.seal(made.key),
  ]);
  return (await storedAuthority(db, sealer))!;
}

async function storedAuthority(db: Queryable, sealer: Sealer): Promise<KeyedCertificate | undefined> {
  const { rows } = await db.query<{ certificate: string; key_sealed: string }>('select certificate, key_sealed from certificate_authority');
  return rows[0] && { certificate: rows[0].certificate, key: sealer.open(rows[0].key_sealed) };
}
