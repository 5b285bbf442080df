import type { PlatformBackend } from './backend.js';
import { LinuxBackend } from './linux/backend.js';
import { execRunner } from './linux/runner.js';
import { procSysctl } from './linux/sysctl.js';
import { UdpBuffers } from './linux/udp-buffers.js';
import type { Logger } from './log.js';

/** The backend for the OS we run on; throws a clear message where there is none yet. */
export function platformBackend(log: Logger): PlatformBackend {
  switch (process.platform) {
    case 'linux':
      return new LinuxBackend({
        runner: execRunner,
        buffers: new UdpBuffers(procSysctl, log),
        sysctl: procSysctl,
        log,
      });
    default:
      throw new Error(
        `weft-helper has no backend for ${process.platform} yet (Linux only so far; macOS and Windows are planned)`,
      );
  }
}
