import type { z } from 'zod';
import {
  BridgeError,
  BridgeEventMessage,
  BridgeResult,
  bridgeCalls,
  CALL_NAMES,
  type CallInput,
  type CallName,
  type CallOutput,
  type EventName,
  type EventPayload,
  isCallName,
  type ParsedCallInput,
} from './schema.js';

// The bridge's plumbing, apart from its schema: the typed ends (main-side handlers, renderer-side
// client) and the envelope each transport carries, validated at both ends.
//   call:   { method, input } → BridgeResult ({ ok: true, value } | { ok: false, error })
//   event:  { event, payload }  (BridgeEventMessage)
// Electron: ipcRenderer.invoke(BRIDGE_IPC.call, method, input) and the BRIDGE_IPC.event channel.
// Web shell: POST WEB_BRIDGE.call/<method> with the input as the JSON body, and a WebSocket at
// WEB_BRIDGE.events sending BridgeEventMessage frames; both need the token from the shell's URL.

export const BRIDGE_IPC = { call: 'weft:bridge:call', event: 'weft:bridge:event' } as const;
export const WEB_BRIDGE = {
  call: '/bridge/v0/call',
  events: '/bridge/v0/events',
  /** Query parameter (or URL fragment key) that carries the shell's token. */
  tokenParam: 'token',
} as const;

/** Main side (electron's ipcMain, the web shell's server, the mocks): one function per call. */
export type BridgeHandlers = {
  [K in CallName]: (input: ParsedCallInput<K>) => Promise<CallOutput<K>> | CallOutput<K>;
};

type Args<K extends CallName> =
  Record<string, never> extends CallInput<K> ? [input?: CallInput<K>] : [input: CallInput<K>];

/** Renderer side: a method per call, plus typed event subscription. */
export type BridgeClient = { [K in CallName]: (...args: Args<K>) => Promise<CallOutput<K>> } & {
  on<E extends EventName>(event: E, listener: (payload: EventPayload<E>) => void): () => void;
};

/** What a transport moves, unvalidated; what the Electron preload exposes as `window.weft`. */
export interface BridgeTransport {
  call(method: CallName, input: unknown): Promise<unknown>;
  /** Subscribes to raw event envelopes; returns an unsubscribe function. */
  onEvent(listener: (message: unknown) => void): () => void;
}

/** Name under which the preload exposes the transport (`window.weft`). */
export const PRELOAD_GLOBAL = 'weft';

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function zodMessage(e: z.ZodError): string {
  return e.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ');
}

/**
 * Runs one call on the main side: checks the method and input against the schema, runs the handler,
 * checks its output. Never throws: every failure becomes `{ ok: false, error }`.
 */
export async function dispatchBridgeCall(
  handlers: BridgeHandlers,
  method: unknown,
  input: unknown,
): Promise<BridgeResult> {
  if (!isCallName(method)) {
    return {
      ok: false,
      error: { code: 'bad-method', message: `unknown call ${String(method).slice(0, 64)}` },
    };
  }
  const spec = bridgeCalls[method];
  const parsed = spec.input.safeParse(input ?? {});
  if (!parsed.success) return { ok: false, error: { code: 'bad-input', message: zodMessage(parsed.error) } };
  let value: unknown;
  try {
    const handler = handlers[method] as (i: unknown) => unknown;
    value = await handler(parsed.data);
  } catch (e) {
    const code = e instanceof BridgeError ? e.code : 'failed';
    return { ok: false, error: { code, message: errorMessage(e) } };
  }
  const out = spec.output.safeParse(value);
  if (!out.success) return { ok: false, error: { code: 'bad-output', message: zodMessage(out.error) } };
  return { ok: true, value: out.data };
}

/** Checks an outgoing event before a transport sends it; throws on a payload the schema refuses. */
export function makeEventMessage<E extends EventName>(
  event: E,
  payload: EventPayload<E>,
): BridgeEventMessage {
  const parsed = BridgeEventMessage.parse({ event, payload });
  return parsed as BridgeEventMessage;
}

/**
 * The renderer's client over any transport: validates every input before sending, every result
 * and every event on arrival (an event that does not validate is dropped and reported to onInvalid).
 */
export function createBridgeClient(
  transport: BridgeTransport,
  onInvalid: (problem: string) => void = () => {},
): BridgeClient {
  const listeners = new Map<EventName, Set<(payload: never) => void>>();
  transport.onEvent((raw) => {
    const msg = BridgeEventMessage.safeParse(raw);
    if (!msg.success) {
      onInvalid(`event refused: ${zodMessage(msg.error)}`);
      return;
    }
    for (const l of listeners.get(msg.data.event) ?? []) (l as (p: unknown) => void)(msg.data.payload);
  });
  const client: Record<string, unknown> = {
    on(event: EventName, listener: (payload: never) => void) {
      let set = listeners.get(event);
      if (!set) {
        set = new Set();
        listeners.set(event, set);
      }
      set.add(listener);
      return () => set.delete(listener);
    },
  };
  for (const name of CALL_NAMES) {
    client[name] = async (input?: unknown) => {
      const spec = bridgeCalls[name];
      const checked = spec.input.safeParse(input ?? {});
      if (!checked.success) throw new BridgeError('bad-input', zodMessage(checked.error));
      const raw = await transport.call(name, checked.data);
      const result = BridgeResult.safeParse(raw);
      if (!result.success) throw new BridgeError('bad-output', `malformed reply to ${name}`);
      if (!result.data.ok) throw new BridgeError(result.data.error.code, result.data.error.message);
      const out = spec.output.safeParse(result.data.value);
      if (!out.success) throw new BridgeError('bad-output', `${name}: ${zodMessage(out.error)}`);
      return out.data;
    };
  }
  return client as BridgeClient;
}
