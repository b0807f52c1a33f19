import type { Host } from '../hosts/host.ts';
import type { ServerRecord } from '../providers/provider.ts';
import type { ArchiveTarget } from '../store/open.ts';
import type { KeyedCertificate } from '../tls/certificates.ts';
import { installHba, TLS_SETTINGS } from '../tls/postgres.ts';
import { restoreFollower } from './follow.ts';
import { archiveSettings, REWINDABLE } from './settings.ts';

/**
 * Create the server's cluster on its host if it does not exist yet, speaking TLS with
 * `certificate` (written again when the cluster exists: initializing twice is fine): a
 * primary from initdb, archiving its WAL and ready to be rewound; a follower
 * (`attrs.follows`) from its leader's base backup. Throws NotYet while that backup is not
 * there.
 */
export async function initializeServer(
  host: Host,
  server: ServerRecord,
  certificate: KeyedCertificate,
  archive: ArchiveTarget,
): Promise<void> {
  // Before the cluster: a cluster whose settings name TLS files cannot start without them.
  await host.installCertificate(certificate);
  if (server.attrs.follows) await restoreFollower(host, server, archive);
  else {
    // A shared server's max_connections is its tenants' connection budget (src/placement.ts).
    const settings: Record<string, string> = { ...REWINDABLE, ...TLS_SETTINGS, ...(await archiveSettings(host, server, archive)) };
    if (server.attrs.max_connections) settings.max_connections = server.attrs.max_connections;
    await host.initialize(settings);
  }
  await installHba(host);
}
