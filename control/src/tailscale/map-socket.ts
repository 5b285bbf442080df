import { constants, type Http2ServerResponse } from 'node:http2';
import type { SendingSocket } from '../server/stream-sender.js';

// A Tailscale client's map stream (one HTTP/2 response inside ts2021) as the SendingSocket that
// StreamSender bounds, so a client that stops reading costs control at most its buffer bound, as a
// Weft node's WebSocket does. What the client has not taken stays in the HTTP/2 stream's writable
// buffer once its flow-control window is spent: that is the stream's unsent backlog.

const OPEN = 1;
const CLOSED = 3;

export function mapSocket(res: Http2ServerResponse): SendingSocket {
  return {
    get readyState() {
      return res.stream.destroyed || res.writableEnded ? CLOSED : OPEN;
    },
    get bufferedAmount() {
      return res.stream.writableLength;
    },
    send(data, done) {
      res.write(data, done);
    },
    terminate() {
      res.stream.close(constants.NGHTTP2_CANCEL);
    },
  };
}
