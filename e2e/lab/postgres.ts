import { randomBytes } from 'node:crypto';
import { must, run } from './exec.js';

// A throw-away PostgreSQL database for control replicas in a lab: on the server scripts/setup.sh
// starts, reached over its local socket as this OS user (root) with the Debian client tools.
// Lab hosts reach the socket too: network namespaces share the file system.

const SOCKET_DIR = '/var/run/postgresql';

/** Why no database can be made here (the reason a test skips with), or null when one can. */
export async function postgresAbsence(): Promise<string | null> {
  const r = await run(['psql', '-h', SOCKET_DIR, '-d', 'postgres', '-Atc', 'select 1'], {
    timeoutMs: 10_000,
  });
  return r.code === 0
    ? null
    : `no PostgreSQL on ${SOCKET_DIR} (${r.stderr.trim() || r.code}); run scripts/setup.sh`;
}

export interface LabDatabase {
  /** postgres://… for weft-control's --db. */
  url: string;
  drop(): Promise<void>;
}

export async function createDatabase(): Promise<LabDatabase> {
  const name = `weft_lab_${randomBytes(6).toString('hex')}`;
  await must(['createdb', '-h', SOCKET_DIR, name], { timeoutMs: 20_000 });
  return {
    url: `postgres://${encodeURIComponent(process.env.USER ?? 'root')}@localhost/${name}?host=${SOCKET_DIR}`,
    drop: async () => {
      await must(['dropdb', '-h', SOCKET_DIR, '--force', '--if-exists', name], { timeoutMs: 20_000 });
    },
  };
}
