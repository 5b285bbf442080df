import {
  type BridgeClient,
  type BridgeTransport,
  createBridgeClient,
  dispatchBridgeCall,
  PRELOAD_GLOBAL,
} from '@weft/protocol';
import { httpTransport, takeToken } from './http.js';

// Picks the transport: Electron's preload (window.weft) when present, else the web shell.
// In development (`npm run dev -w @weft/renderer`, then open /?mock), an in-page mock backend
// stands in for everything behind the bridge; production builds do not contain it.

export async function connectBridge(onLink: (up: boolean) => void): Promise<BridgeClient> {
  const fromPreload = (globalThis as unknown as Record<string, BridgeTransport | undefined>)[PRELOAD_GLOBAL];
  if (fromPreload) {
    onLink(true);
    return createBridgeClient(fromPreload, (p) => console.warn(p));
  }
  if (import.meta.env.DEV && new URLSearchParams(window.location.search).has('mock')) {
    const { MockBackend } = await import('../../testing/mock-backend.js');
    const backend = new MockBackend({ delayMs: 600 });
    onLink(true);
    return createBridgeClient({
      call: (method, input) => dispatchBridgeCall(backend.handlers, method, input),
      onEvent: (listener) => backend.subscribe(listener),
    });
  }
  const token = takeToken(window.location, window.sessionStorage, window.history) ?? '';
  const transport = httpTransport({ origin: window.location.origin, token, onLink });
  return createBridgeClient(transport, (p) => console.warn(p));
}
