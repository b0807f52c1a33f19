import type { Host } from '../hosts/host.ts';
import { RewindSourceUnreachable } from '../pg/cluster.ts';
import type { ServerRecord } from '../providers/provider.ts';
import { serverArchivePrefix, type ArchiveTarget } from '../store/open.ts';
import { installHba } from '../tls/postgres.ts';
import { restoreFollower } from './follow.ts';
import { NotYet } from './notYet.ts';
import { leaderOf, standbySettings } from './settings.ts';

/**
 * How a former primary came back: rewound; rebuilt because the rewind could not be done; or
 * started, because an earlier attempt had already made it a standby and got no further.
 */
export type Rejoined = { how: 'rewound' } | { how: 'rebuilt'; because: string } | { how: 'started' };

/**
 * A fenced former primary comes back as a standby of its leader (`attrs.follows`, the
 * server that took over, at `leader`), and is started: rewound when pg_rewind can (only
 * what changed is copied), or else rebuilt from the leader's base backup. What the old
 * primary wrote after the timelines parted was never acknowledged (its commits waited for
 * the standby), so it goes; the rebuild keeps the old directory aside, as `data.diverged`,
 * for an operator.
 *
 * Each attempt goes on from what the last one left: a rewind that could not reach the
 * leader changed nothing and is tried again (it used to set the data aside, and a leader
 * down for a moment made every later attempt wait for a backup); data set aside is
 * rebuilt; a copy already made a standby is started. It throws NotYet while the leader or
 * the backup it needs is not there.
 */
export async function rejoinAsStandby(host: Host, server: ServerRecord, archive: ArchiveTarget): Promise<Rejoined> {
  // leaderOf throws unless the server follows a placed leader: `attrs.follows` is set below.
  const leader = { ...leaderOf(server), password: server.superuserPassword };
  await host.kill();
  let how: Rejoined;
  // A primary has no standby.signal (promotion removes it): this one is a rewind or a
  // rebuild that an earlier attempt made and did not see start.
  if (await host.hasDataFile('standby.signal')) how = { how: 'started' };
  else if (await host.hasDataFile('PG_VERSION')) {
    try {
      await host.rewind(leader, await standbySettings(host, server, archive, serverArchivePrefix(server.attrs.follows!)));
      how = { how: 'rewound' };
    } catch (err) {
      if (err instanceof RewindSourceUnreachable) throw new NotYet(err.message);
      await host.setAside();
      await rebuild(host, server, archive, (err as Error).message);
      how = { how: 'rebuilt', because: (err as Error).message };
    }
  } else {
    await rebuild(host, server, archive, 'no data directory to rewind');
    how = { how: 'rebuilt', because: 'no data directory to rewind' };
  }
  await installHba(host);
  try {
    await host.start();
  } catch (err) {
    if (how.how !== 'started') throw err;
    // A standby an earlier attempt made that cannot start (its rewind left it unable to
    // read its own checkpoint, say) would fail every attempt the same way: rebuilt instead.
    const because = `the standby an earlier attempt made did not start: ${(err as Error).message.slice(0, 500)}`;
    await host.kill();
    await host.setAside();
    await rebuild(host, server, archive, because);
    await installHba(host);
    await host.start();
    return { how: 'rebuilt', because };
  }
  return how;
}

async function rebuild(host: Host, server: ServerRecord, archive: ArchiveTarget, because: string): Promise<void> {
  await restoreFollower(host, server, archive).catch((err: unknown) => {
    // Still a NotYet, saying why it is rebuilt: the next attempt only finds no data.
    if (err instanceof NotYet) err.message = `${because}; to rebuild: ${err.message}`;
    else err = new Error(`${because}; and rebuilding from the archive failed: ${(err as Error).message}`);
    throw err;
  });
}
