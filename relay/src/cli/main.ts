#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DERP_PATH, Key, parseAddr } from '@weft/protocol';
import { LogFormat, LogLevel, serverLogger } from '@weft/protocol/logging';
import { Command, InvalidArgumentError, Option } from 'commander';
import { startRelay } from '../relay.js';
import { loadOrCreateRelayKey } from '../state.js';

// weft-relay: the relay server and WireGuard reflector in one process.

function parsePort(text: string): number {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text) || Number(text) > 65535) {
    throw new InvalidArgumentError('must be a port number (0 picks a free one)');
  }
  return Number(text);
}

/** HOST:PORT or [IPV6]:PORT, HOST an IP address (the reflector binds it too). */
function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):([0-9]+)$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  const family = host === undefined ? undefined : parseAddr(host)?.family;
  if (m === null || host === undefined || family === undefined || (family === 6) !== (m[1] !== undefined)) {
    throw new InvalidArgumentError('must be IP:PORT or [IPV6]:PORT');
  }
  return { host, port: parsePort(m[3] as string) };
}

function parseCount(text: string): number {
  if (!/^[1-9][0-9]{0,8}$/.test(text)) throw new InvalidArgumentError('must be a whole number above 0');
  return Number(text);
}

function parseControlUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new InvalidArgumentError('must be an http:// or https:// URL');
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.hash !== '') {
    throw new InvalidArgumentError('must be an http:// or https:// URL without query or fragment');
  }
  return url.href;
}

function parseKey(text: string): string {
  if (!Key.safeParse(text).success) throw new InvalidArgumentError('must be a 32-byte key in base64');
  return text;
}

const program = new Command('weft-relay').description(
  'Forwards WireGuard packets between Weft nodes by node key, and reflects their public endpoints',
);

program
  .command('serve')
  .description('run the relay (WebSocket at /relay, DERP at /derp) and its WireGuard reflector (UDP)')
  .requiredOption('--listen <host:port>', 'address of the WebSocket listener', parseListen)
  .option('--tls-cert <file>', 'serve wss:// with this certificate chain (PEM)')
  .option('--tls-key <file>', 'and this private key (PEM)')
  .requiredOption('--reflector-port <port>', 'UDP port of the reflector, on the --listen address', parsePort)
  .option(
    '--stun-port <port>',
    'answer STUN Binding requests (Tailscale clients) on this UDP port, on the --listen address',
    parsePort,
  )
  .requiredOption('--state-dir <dir>', 'directory of the relay key (created, 0700)')
  .option(
    '--control-url <url>',
    "serve only this control server's tailnet (control must list this relay's key in --relays)",
    parseControlUrl,
  )
  .option('--control-key <key>', "control's public key (GET <control-url>/machine/key), pinned", parseKey)
  .option('--open', 'serve any node key that proves itself, with no control (labs, closed networks)')
  .option(
    '--max-connections-per-source <n>',
    'connections from one IPv4 address or IPv6 /64 (default 256)',
    parseCount,
  )
  .option('--max-queue-mib <n>', 'MiB queued for sending across all connections (default 256)', parseCount)
  .option(
    '--metrics-listen <host:port>',
    'serve Prometheus metrics at http://HOST:PORT/metrics (default: none; they reveal how many nodes use the relay)',
    parseListen,
  )
  .addOption(
    new Option('--log-format <format>', 'log lines on stderr as text or as JSON events')
      .choices(LogFormat.options)
      .default('text'),
  )
  .addOption(
    new Option('--log-level <level>', 'least severe events logged').choices(LogLevel.options).default('info'),
  )
  .action(
    async (o: {
      listen: { host: string; port: number };
      tlsCert?: string;
      tlsKey?: string;
      reflectorPort: number;
      stunPort?: number;
      stateDir: string;
      controlUrl?: string;
      controlKey?: string;
      open?: boolean;
      maxConnectionsPerSource?: number;
      maxQueueMib?: number;
      metricsListen?: { host: string; port: number };
      logFormat: LogFormat;
      logLevel: LogLevel;
    }) => {
      const logger = serverLogger({ name: 'weft-relay', format: o.logFormat, level: o.logLevel });
      const log = (line: string) => logger.info(line);
      if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) {
        program.error('--tls-cert and --tls-key go together');
      }
      if ((o.controlUrl === undefined) !== (o.controlKey === undefined)) {
        program.error('--control-url and --control-key go together');
      }
      if ((o.controlUrl === undefined) === (o.open === undefined)) {
        program.error(
          'say whom to serve: --control-url URL --control-key KEY (one tailnet), or --open (any node key)',
        );
      }
      const tls =
        o.tlsCert && o.tlsKey ? { cert: readFileSync(o.tlsCert), key: readFileSync(o.tlsKey) } : undefined;
      const relay = await startRelay({
        keyPair: await loadOrCreateRelayKey(o.stateDir),
        host: o.listen.host,
        port: o.listen.port,
        reflectorPort: o.reflectorPort,
        stunPort: o.stunPort,
        tls,
        // The last member list is kept beside the key, to serve it after a restart while control is away.
        control:
          o.controlUrl && o.controlKey
            ? { url: o.controlUrl, publicKey: o.controlKey, cacheFile: join(o.stateDir, 'members.json') }
            : undefined,
        limits: {
          ...(o.maxConnectionsPerSource ? { maxConnectionsPerSource: o.maxConnectionsPerSource } : {}),
          ...(o.maxQueueMib ? { maxTotalQueueBytes: o.maxQueueMib * 1024 * 1024 } : {}),
        },
        log,
        metricsListen: o.metricsListen,
      });
      const host = o.listen.host.includes(':') ? `[${o.listen.host}]` : o.listen.host;
      const derpUrl = relay.url.replace(/^ws/, 'http').replace(/\/relay$/, DERP_PATH);
      process.stdout.write(
        `weft-relay listening on ${relay.url}, derp ${derpUrl}, reflector udp ${host}:${relay.reflectorPort}${relay.stunPort === null ? '' : `, stun udp ${host}:${relay.stunPort}`}, key ${relay.publicKey} (serving ${o.controlUrl ? `the tailnet of ${o.controlUrl}` : 'any node key'})${relay.metricsUrl === null ? '' : `, metrics ${relay.metricsUrl}`}\n`,
      );
      const stop = () => {
        logger.info('shutting down');
        relay.close().then(() => process.exit(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    },
  );

program
  .command('key')
  .description("print the relay's public key (for the relay map), creating the key if needed")
  .requiredOption('--state-dir <dir>', 'directory of the relay key')
  .action(async (o: { stateDir: string }) => {
    process.stdout.write(`${(await loadOrCreateRelayKey(o.stateDir)).publicKey}\n`);
  });

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`weft-relay: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
