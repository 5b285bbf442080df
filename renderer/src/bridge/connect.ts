import {
  type BridgeClient,
  type BridgeTransport,
  createBridgeClient,
  dispatchBridgeCall,
  PRELOAD_GLOBAL,
} from '@weft/protocol';
import { httpTransport, takeToken } from './http.js';

// Picks the transport: Electron's preload (window.weft) when present, else the web shell.
// In development (`npm run dev -w @weft/renderer`, then open /?mock), the web shell's controller
// runs in the page over a stand-in engine with a demo tailnet (core's DemoApp); production builds
// do not contain it.

export async function connectBridge(onLink: (up: boolean) => void): Promise<BridgeClient> {
  const fromPreload = (globalThis as unknown as Record<string, BridgeTransport | undefined>)[PRELOAD_GLOBAL];
  if (fromPreload) {
    onLink(true);
    return createBridgeClient(fromPreload, (p) => console.warn(p));
  }
  if (import.meta.env.DEV && new URLSearchParams(window.location.search).has('mock')) {
    const { DemoApp } = await import('@weft/core/web/testing');
    const backend = new DemoApp({ delayMs: 600 });
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
