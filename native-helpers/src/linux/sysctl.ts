import { readFile, writeFile } from 'node:fs/promises';

/** Kernel parameters by their sysctl name (`net.core.rmem_max`); injectable so tests need no root. */
export interface Sysctl {
  read(key: string): Promise<string>;
  write(key: string, value: string): Promise<void>;
}

const path = (key: string) => `/proc/sys/${key.replaceAll('.', '/')}`;

export const procSysctl: Sysctl = {
  read: async (key) => (await readFile(path(key), 'utf8')).trim(),
  write: (key, value) => writeFile(path(key), `${value}\n`),
};
