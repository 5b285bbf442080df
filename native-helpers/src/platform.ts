import type { PlatformBackend } from './backend.js';
import { LinuxBackend } from './linux/backend.js';
import { OsDns } from './linux/dns.js';
import { ResolvConf } from './linux/dns-resolv-conf.js';
import { execRunner } from './linux/runner.js';
import { procSysctl } from './linux/sysctl.js';
import { UdpBuffers } from './linux/udp-buffers.js';
import type { Logger } from './log.js';
import { readBootId, StateFile } from './state-file.js';

/** The backend for the OS we run on, keeping what it owns in `stateDir`; a clear message where there is none yet. */
export async function platformBackend(
  log: Logger,
  stateDir: string,
  resolvConfPath = '/etc/resolv.conf',
): Promise<PlatformBackend> {
  switch (process.platform) {
    case 'linux': {
      const file = new StateFile(stateDir, log);
      await file.prepare();
      return new LinuxBackend({
        runner: execRunner,
        buffers: new UdpBuffers(procSysctl, log),
        sysctl: procSysctl,
        log,
        owned: { file, bootId: await readBootId() },
        dns: new OsDns(execRunner, new ResolvConf(resolvConfPath, stateDir, log), log),
      });
    }
    default:
      throw new Error(
        `weft-helper has no backend for ${process.platform} yet (Linux only so far; macOS and Windows are planned)`,
      );
  }
}
