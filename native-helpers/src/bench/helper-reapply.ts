import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DesiredState } from '@weft/protocol';
import { cpuTimes } from '@weft/protocol/proc';
import { platformBackend } from '../platform.js';

// `npm run bench -- helper-reapply [FLOWS] [APPLIES]` (root): the engine applies its state again every
// 30 s; this measures what one unchanged apply of a filtered state costs the helper (its own CPU and
// that of the `ip`, `wg` and `nft` it runs) while the table's udp4 flow set holds FLOWS flows. The
// backend runs in-process, in a scratch network namespace, with wireguard-go.

// The parent's arguments are FLOWS APPLIES; the child's, --child FLOWS APPLIES IFACE.
const isChild = process.argv[2] === '--child';
const args = process.argv.slice(isChild ? 3 : 2);
const flows = Number(args[0] ?? 60_000);
const applies = Number(args[1] ?? 5);
const key = (n: number) => Buffer.alloc(32, n).toString('base64');

async function child(iface: string): Promise<void> {
  const state: DesiredState = {
    interface: {
      name: iface,
      privateKey: key(1),
      listenPort: 51999,
      addresses: ['100.64.0.1/10'],
      mtu: 1280,
    },
    peers: [{ publicKey: key(2), allowedIPs: ['100.64.0.2/32'] }],
    routes: [],
    filter: [
      {
        src: ['100.64.0.2/32'],
        dst: [{ prefix: '100.64.0.1/32', ports: { first: 443, last: 443 } }],
        protos: [6],
      },
    ],
  };
  const dir = mkdtempSync(join(tmpdir(), 'weft-reapply-'));
  const quiet = { info() {}, warn() {}, error: (m: string) => console.error(m) };
  const backend = await platformBackend(quiet, dir, join(dir, 'resolv.conf'));
  try {
    await backend.apply(state);
    const lines: string[] = [];
    for (let i = 0; i < flows; i += 5000) {
      const chunk: string[] = [];
      for (let j = i; j < Math.min(i + 5000, flows); j++)
        chunk.push(
          `198.18.${(j >> 8) & 255}.${j & 255} . ${1024 + (j % 64_000)} . 100.64.0.1 . 40000 timeout 10m`,
        );
      lines.push(`add element inet weft-${iface} udp4 { ${chunk.join(', ')} }`);
    }
    writeFileSync(join(dir, 'flows.nft'), `${lines.join('\n')}\n`);
    if (flows > 0) execFileSync('nft', ['-f', join(dir, 'flows.nft')]);
    const listed = execFileSync('nft', ['-j', 'list', 'set', 'inet', `weft-${iface}`, 'udp4'], {
      maxBuffer: 1 << 28,
    });
    console.log(`  udp4 holds ${listed.toString().split('"concat"').length - 1} flows`);
    // V8 compiles the apply path on the first run.
    await backend.apply(state);
    for (let k = 1; k <= applies; k++) {
      const [kids, own, t0] = [cpuTimes('self').children, process.cpuUsage(), process.hrtime.bigint()];
      await backend.apply(state);
      const wall = Number(process.hrtime.bigint() - t0) / 1e9;
      const cpu = process.cpuUsage(own);
      console.log(
        `  apply ${k}: wall ${wall.toFixed(3)} s, helper ${((cpu.user + cpu.system) / 1e6).toFixed(3)} CPU-s, ` +
          `its commands ${(cpuTimes('self').children - kids).toFixed(2)} CPU-s`,
      );
    }
  } finally {
    await backend.down(iface);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (isChild) {
  await child(args[2] as string);
} else {
  const self = fileURLToPath(import.meta.url);
  const ns = `weft-reapply-${process.pid}`;
  // wireguard-go's sockets share one folder machine-wide: a name of this run's own.
  const iface = `wr${process.pid % 1_000_000}`;
  console.log(`helper-reapply: an unchanged filtered state applied again, ${flows} flows in udp4`);
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const argv = [
      'netns',
      'exec',
      ns,
      process.execPath,
      self,
      '--child',
      String(flows),
      String(applies),
      iface,
    ];
    const out = spawnSync('ip', argv, { stdio: 'inherit' });
    if (out.status !== 0) throw new Error(`the measurement failed (exit ${out.status})`);
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
  console.log(`  command: node ${self} ${flows} ${applies}`);
}
