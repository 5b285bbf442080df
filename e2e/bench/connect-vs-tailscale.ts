import { TAILSCALE_VERSION, tailscaleMissing } from '../lab/index.js';
import {
  type ConnectTimes,
  fmtTime,
  type Pair,
  ROWS,
  type Row,
  timeConnect,
  World,
  weftPair,
} from './nat-lab.js';

// `npm run bench -- connect-vs-tailscale`: on each NAT lab row (e2e/bench/nat-lab.ts), the time
// from `up` to the first ping reply and to a confirmed direct path, for a pair of Weft nodes and
// for a pair of official Tailscale clients (tailscaled v1.102.5), both against the same Weft
// control and relay in the same run. Direct for Tailscale: both ends have a current UDP address
// for the other (`tailscale status`: CurAddr). Only figures from one run compare; nothing is
// asserted.

/** A pair of Tailscale clients on the hosts of `row`. */
async function tailscalePair(w: World, row: Row): Promise<Pair> {
  const [ha, hb] = [await w.host(row.a), await w.host(row.b)];
  const [a, b] = [w.tsNode(ha.host, ha.name), w.tsNode(hb.host, hb.name)];
  await Promise.all([a.start(), b.start()]);
  let bIp = '';
  return {
    up: async () => {
      await Promise.all([
        a.up({ loginServer: w.control.url, authKey: w.key, hostname: ha.name }),
        b.up({ loginServer: w.control.url, authKey: w.key, hostname: hb.name }),
      ]);
      bIp = await b.ip4();
    },
    ping: () => a.host.ping(bIp, { count: 1, deadlineS: 1 }),
    direct: async () => {
      const [pa, pb] = await Promise.all([a.peer(hb.name), b.peer(ha.name)]);
      return Boolean(pa?.CurAddr) && Boolean(pb?.CurAddr);
    },
    stop: async () => {
      await Promise.all([a.stop(), b.stop()]);
    },
  };
}

function ratio(weft: number | null, ts: number | null): string {
  return weft === null || ts === null || weft === 0 ? '-' : `${(ts / weft).toFixed(2)}×`;
}

async function main(): Promise<void> {
  const missing = tailscaleMissing();
  if (missing) throw new Error(missing);
  console.log('npm run bench -- connect-vs-tailscale');
  console.log(
    `Weft nodes (this tree) vs Tailscale clients (tailscaled ${TAILSCALE_VERSION}), both on Weft control`,
  );
  const w = new World();
  const stop = () => {
    void w.stop().finally(() => process.exit(1));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  try {
    await w.start();
    console.log(
      '\n== time from `up` (both nodes at once) to the first ping reply / to a confirmed direct path',
    );
    console.log(
      `${'row'.padEnd(20)} ${'Weft ping'.padEnd(13)} ${'Tailscale ping'.padEnd(15)} ${'ratio'.padEnd(7)} ${'Weft direct'.padEnd(13)} ${'Tailscale direct'.padEnd(17)} ratio`,
    );
    // The IPv6 row is left out: its Tailscale pair would need the same uplinks (not built here).
    for (const row of ROWS.filter((r) => !r.ipv6)) {
      const times: ConnectTimes[] = [];
      for (const make of [weftPair, tailscalePair]) {
        const pair = await make(w, row);
        try {
          times.push(await timeConnect(pair, row.direct));
        } finally {
          await pair.stop();
        }
      }
      const [weft, ts] = times as [ConnectTimes, ConnectTimes];
      const direct = (t: ConnectTimes) => (row.direct ? fmtTime(t.direct) : '(relay)');
      console.log(
        `${`${row.a} ↔ ${row.b}`.padEnd(20)} ${fmtTime(weft.firstPing).padEnd(13)} ${fmtTime(ts.firstPing).padEnd(15)} ${ratio(weft.firstPing, ts.firstPing).padEnd(7)} ${direct(weft).padEnd(13)} ${direct(ts).padEnd(17)} ${row.direct ? ratio(weft.direct, ts.direct) : '-'}`,
      );
    }
    console.log(
      '\nratio: Tailscale time / Weft time (above 1: Weft connected sooner). One run; figures are noisy.',
    );
  } finally {
    await w.stop();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
