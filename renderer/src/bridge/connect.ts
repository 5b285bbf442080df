import { type BridgeClient, type BridgeTransport, createBridgeClient, PRELOAD_GLOBAL } from '@weft/protocol';
import { httpTransport, takeToken } from './http.js';

// Picks the transport: Electron's preload (window.weft) when present, else the web shell.

export function connectBridge(onLink: (up: boolean) => void): BridgeClient {
  const fromPreload = (globalThis as unknown as Record<string, BridgeTransport | undefined>)[PRELOAD_GLOBAL];
  if (fromPreload) {
    onLink(true);
    return createBridgeClient(fromPreload, (p) => console.warn(p));
  }
  const token = takeToken(window.location, window.sessionStorage, window.history) ?? '';
  const transport = httpTransport({ origin: window.location.origin, token, onLink });
  return createBridgeClient(transport, (p) => console.warn(p));
}
