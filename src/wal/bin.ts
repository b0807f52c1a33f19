import { walMain } from './main.ts';

/** The entry point bundled into PGFLEET_HOME for archive_command and restore_command. */
void walMain(process.argv.slice(2)).then((code) => (process.exitCode = code));
