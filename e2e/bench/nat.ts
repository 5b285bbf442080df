import type { Host, Router } from '../lab/index.js';
import { sleep } from '../lab/index.js';
import { fmtTime, pathOf, ROWS, timeConnect, until, World, weftPair } from './nat-lab.js';

// `npm run bench -- nat [connect|change|throughput|all] [--seconds S]`: NAT traversal figures from one run
// on real namespaces, real NAT routers, one real relay and control (as in e2e/tests/nat-matrix).
//   connect     per matrix row: time from `weft up` (both nodes at once) to the first ping reply
//               across the tunnel, and to both ends reporting a direct path (rows expected direct)
//   change      a direct pair, then one router renumbered: time to ping and to direct again
//               (no back-off gap after a network change)
//   throughput  iperf3 through the tunnel between the same two hosts (each behind an
//               endpoint-independent NAT), first direct, then with direct UDP cut at one router
//               so the same pair goes through the relay: relay/direct ratio (goal ≥ 0.6)
// Only figures from one run compare; nothing here is asserted.

const args = process.argv.slice(2);
const what = args.find((a) => !a.startsWith('--')) ?? 'all';
const secondsArg = args.indexOf('--seconds');
const SECONDS = secondsArg >= 0 ? Number(args[secondsArg + 1]) : 10;

async function connect(w: World): Promise<void> {
  console.log(
    '\n== time from `weft up` (both at once) to the first ping reply and to a confirmed direct path;',
  );
  console.log(
    '   "after up": the same counted from when both `up`s had returned (a loaded machine slows `up`)',
  );
  console.log('row                      first ping   after up   direct path   after up');
  let direct = 0;
  for (const row of ROWS) {
    const pair = await weftPair(w, row);
    const t = await timeConnect(pair, row.direct);
    if (t.direct !== null) direct++;
    const after = (ms: number | null) => (ms === null ? '' : `${ms - t.bothUp} ms`);
    console.log(
      `${`${row.a} ↔ ${row.b}${row.ipv6 ? ' (IPv6)' : ''}`.padEnd(24)} ${fmtTime(t.firstPing).padEnd(12)} ${after(t.firstPing).padEnd(10)} ${(row.direct ? fmtTime(t.direct) : '(relay by design)').padEnd(13)} ${after(t.direct)}`,
    );
    await pair.stop();
  }
  console.log(`rows direct: ${direct} of ${ROWS.length} (${Math.round((100 * direct) / ROWS.length)}%)`);
}

/**
 * A network change: two hosts behind endpoint-independent NATs go direct, then one router comes
 * back with a new public address (every mapping behind it changes). Time to the first ping reply
 * and to both ends direct again, the peer at the new address (a back-off gap would show here).
 */
async function networkChange(w: World): Promise<void> {
  console.log('\n== network change: one EIM router renumbered while its host is direct to another EIM host');
  const [ha, hb] = [await w.host('eim'), await w.host('eim')];
  const [a, b] = [w.node(ha.host, ha.name), w.node(hb.host, hb.name)];
  await Promise.all([a.start(), b.start()]);
  await Promise.all([a.up(w.control.url, w.key, ha.name), b.up(w.control.url, w.key, hb.name)]);
  const bIp = await b.ip4();
  const peerOf = async (n: typeof a, name: string) =>
    (await n.statusFromSocket()).peers.find((p) => p.name === name);
  const direct = await until(30_000, async () => {
    await a.host.ping(bIp, { count: 1, deadlineS: 1 });
    return (await peerOf(a, hb.name))?.path === 'direct' && (await peerOf(b, ha.name))?.path === 'direct';
  });
  if (!direct) throw new Error('no direct path before the change');
  const router = ha.router as Router;
  const newIp = router.wanIp.replace(/\.\d+$/, (m) => `.${Number(m.slice(1)) + 100}`);
  const t0 = Date.now();
  await router.renumber(newIp);
  const firstPing = await until(
    60_000,
    async () => (await a.host.ping(bIp, { count: 1, deadlineS: 1 })) && Date.now() - t0,
  );
  let pinging = true;
  const pinger = (async () => {
    while (pinging) await a.host.ping(bIp, { count: 1, deadlineS: 1 }).catch(() => false);
  })();
  const again = await until(60_000, async () => {
    const [pa, pb] = await Promise.all([peerOf(a, hb.name), peerOf(b, ha.name)]);
    return (
      pa?.path === 'direct' &&
      pb?.path === 'direct' &&
      pb.endpoint?.startsWith(`${newIp}:`) &&
      Date.now() - t0
    );
  });
  pinging = false;
  await pinger;
  console.log(
    `router ${router.wanIp}: first ping reply after ${fmtTime(firstPing)}, direct again (peer at the new address) after ${again === null ? 'none in 60 s' : `${again} ms`}`,
  );
  await Promise.all([a.stop(), b.stop()]);
}

async function iperf(
  client: Host,
  server: Host,
  target: string,
  bind: string,
  seconds: number,
): Promise<number> {
  const srv = server.spawn(['iperf3', '-s', '-1', '-B', bind]);
  await sleep(500);
  try {
    const r = await client.exec(
      ['timeout', String(seconds + 15), 'iperf3', '-c', target, '-t', String(seconds), '-J'],
      {
        timeoutMs: (seconds + 20) * 1000,
      },
    );
    const j = JSON.parse(r.stdout) as {
      end?: { sum_received?: { bits_per_second?: number } };
      error?: string;
    };
    if (!j.end?.sum_received?.bits_per_second) throw new Error(`iperf3: ${j.error ?? r.stderr}`);
    return j.end.sum_received.bits_per_second / 1e6;
  } finally {
    if (srv.exitCode === null) srv.kill('SIGTERM');
  }
}

async function throughput(w: World): Promise<void> {
  console.log(`\n== iperf3 through the tunnel, same two hosts (each behind an EIM NAT), ${SECONDS} s each`);
  const [ha, hb] = [await w.host('eim'), await w.host('eim')];
  const [a, b] = [w.node(ha.host, ha.name), w.node(hb.host, hb.name)];
  await Promise.all([a.start(), b.start()]);
  await Promise.all([a.up(w.control.url, w.key, ha.name), b.up(w.control.url, w.key, hb.name)]);
  const bIp = await b.ip4();
  const direct = await until(30_000, async () => {
    await a.host.ping(bIp, { count: 1, deadlineS: 1 });
    return (await pathOf(a, hb.name)) === 'direct' && (await pathOf(b, ha.name)) === 'direct';
  });
  if (!direct) throw new Error('no direct path between the two hosts');
  const viaDirect = await iperf(a.host, b.host, bIp, bIp, SECONDS);
  await ha.router?.cutUdp(hb.router?.wanIp as string);
  const relayed = await until(20_000, async () => {
    await a.host.ping(bIp, { count: 1, deadlineS: 1 });
    return (await pathOf(a, hb.name)) === 'relay' && (await pathOf(b, ha.name)) === 'relay';
  });
  if (!relayed) throw new Error('the pair did not fall back to the relay');
  const viaRelay = await iperf(a.host, b.host, bIp, bIp, SECONDS);
  console.log(`tunnel, direct path:                          ${viaDirect.toFixed(0)} Mbit/s`);
  console.log(`tunnel, through the relay:                    ${viaRelay.toFixed(0)} Mbit/s`);
  console.log(
    `ratio relay/direct:                           ${(viaRelay / viaDirect).toFixed(2)} (goal ≥ 0.6)`,
  );
}

async function main(): Promise<void> {
  const w = new World();
  const stop = () => {
    void w.stop().finally(() => process.exit(1));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  console.log(`npm run bench -- nat ${args.join(' ')}`.trim());
  try {
    await w.start();
    if (what === 'connect' || what === 'all') await connect(w);
    if (what === 'change' || what === 'all') await networkChange(w);
    if (what === 'throughput' || what === 'all') await throughput(w);
  } finally {
    await w.stop();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
