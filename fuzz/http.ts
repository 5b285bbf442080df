import { request } from 'node:http';

// A raw HTTP request with exactly the method, path and headers given (fetch would fix up Host and
// refuse others), bounded in time: a server that does not answer within `timeoutMs` has stopped
// answering, which the fuzz counts as a crash.

export interface RawRequest {
  socketPath?: string;
  port?: number;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
  /** Send no Host header at all (node adds one otherwise). */
  noHost?: boolean;
  timeoutMs?: number;
}

export interface RawAnswer {
  status: number;
  body: string;
}

/** Thrown when the client cannot even send the request (e.g. a path node refuses to put on the wire). */
export class Unsendable extends Error {}

export function rawRequest(r: RawRequest): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    let req: ReturnType<typeof request>;
    try {
      req = request({
        socketPath: r.socketPath,
        host: r.port === undefined ? undefined : '127.0.0.1',
        port: r.port,
        method: r.method,
        path: r.path,
        // Node sends a GET's body without a length unless told, which the server reads as a second request.
        headers:
          r.body === undefined
            ? r.headers
            : { 'content-length': String(Buffer.byteLength(r.body)), ...r.headers },
        agent: false,
        setHost: !r.noHost,
      });
    } catch (e) {
      reject(new Unsendable(String(e)));
      return;
    }
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no answer within ${r.timeoutMs ?? 10_000} ms`));
    }, r.timeoutMs ?? 10_000);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', reject);
    });
    req.end(r.body);
  });
}

/** JSON.parse, or undefined for text that is not JSON. */
export function jsonOf(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
