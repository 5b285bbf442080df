import { constants, type Http2ServerResponse } from 'node:http2';
import type { SendingSocket } from '../server/stream-sender.js';

// A Tailscale client's map stream (one HTTP/2 response inside ts2021) as the SendingSocket that
// StreamSender bounds, so a client that stops reading costs control at most its buffer bound, as a
// Weft node's WebSocket does. What the client has not taken stays in the HTTP/2 stream's writable
// buffer once its flow-control window is spent: that is the stream's unsent backlog.

const OPEN = 1;
const CLOSED = 3;

export function mapSocket(res: Http2ServerResponse): SendingSocket<readonly Buffer[]> {
  return {
    get readyState() {
      return res.stream.destroyed || res.writableEnded ? CLOSED : OPEN;
    },
    get bufferedAmount() {
      return res.stream.writableLength;
    },
    // A frame's parts go as one vectored write: a whole map is its peers' shared bytes, referenced
    // until sent, not copied into a buffer of its own for each receiver.
    send(parts, done) {
      res.stream.cork();
      parts.forEach((part, i) => {
        res.write(part, i === parts.length - 1 ? done : undefined);
      });
      res.stream.uncork();
    },
    terminate() {
      res.stream.close(constants.NGHTTP2_CANCEL);
    },
  };
}
