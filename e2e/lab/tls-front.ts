import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { must } from './exec.js';
import { type Host, waitFor } from './lab.js';

// HTTPS in front of a lab server, as a deployment puts a TLS terminator in front of control: the
// official clients use https to a control host that is not on a private network, and verify its
// certificate. Each run makes its own CA (openssl), so a client trusts it through SSL_CERT_FILE
// and nothing else does.

export interface LabCa {
  /** The CA certificate (PEM file) a client trusts, e.g. SSL_CERT_FILE for tailscaled. */
  caFile: string;
  /** A certificate for the server's IP address, signed by the CA, and its key (PEM files). */
  certFile: string;
  keyFile: string;
}

/** A one-run CA in `dir` and a certificate from it for `ip` (in the subjectAltName). */
export async function makeLabCa(dir: string, ip: string): Promise<LabCa> {
  const f = (name: string) => join(dir, name);
  const ca: LabCa = { caFile: f('ca.pem'), certFile: f('server.pem'), keyFile: f('server-key.pem') };
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const caExt = ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign'];
  await must(
    [
      'openssl',
      'req',
      '-x509',
      ...newKey,
      '-keyout',
      f('ca-key.pem'),
      '-out',
      ca.caFile,
      '-days',
      '2',
    ].concat(['-subj', '/CN=weft lab CA', ...caExt]),
  );
  await must([
    'openssl',
    'req',
    ...newKey,
    '-keyout',
    ca.keyFile,
    '-out',
    f('server.csr'),
    '-subj',
    `/CN=${ip}`,
  ]);
  writeFileSync(f('server.ext'), `subjectAltName=IP:${ip}\nextendedKeyUsage=serverAuth\n`);
  await must(
    ['openssl', 'x509', '-req', '-in', f('server.csr'), '-CA', ca.caFile, '-CAkey', f('ca-key.pem')].concat([
      '-CAcreateserial',
      '-days',
      '2',
      '-out',
      ca.certFile,
      '-extfile',
      f('server.ext'),
    ]),
  );
  return ca;
}

/**
 * Terminates TLS on `listen` (ip:port on `host`) and pipes each connection, unchanged, to
 * `target` (ip:port): upgrades such as /ts2021 pass through as they are. A Node process in the
 * host's namespace; the lab kills it at cleanup.
 */
export async function startTlsFront(
  host: Host,
  ca: LabCa,
  listen: string,
  target: string,
): Promise<ChildProcess> {
  const child = host.spawn(['node', '-e', FRONT, listen, target, ca.certFile, ca.keyFile]);
  let out = '';
  child.stdout?.on('data', (c: Buffer) => {
    out += c.toString();
  });
  child.stderr?.on('data', (c: Buffer) => {
    out += c.toString();
  });
  await waitFor('the TLS front to listen', async () => {
    if (child.exitCode !== null) throw new Error(`TLS front exited: ${out}`);
    return out.includes('listening');
  });
  return child;
}

const FRONT = `
const [listen, target, cert, key] = process.argv.slice(1);
const tls = require('node:tls'), net = require('node:net'), fs = require('node:fs');
const split = (a) => { const i = a.lastIndexOf(':'); return [a.slice(0, i), Number(a.slice(i + 1))]; };
const [lh, lp] = split(listen), [th, tp] = split(target);
const srv = tls.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (c) => {
  const up = net.connect(tp, th);
  c.pipe(up).pipe(c);
  const end = () => { c.destroy(); up.destroy(); };
  c.on('error', end); up.on('error', end); c.on('close', end); up.on('close', end);
});
srv.listen(lp, lh, () => console.log('listening'));
`;
