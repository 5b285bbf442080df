import { z } from 'zod';
import { parseEndpoint, parsePrefix } from '../ip.js';
import { PeerStatus, Status } from '../localapi.js';
import { PREFS_DEFAULTS, PrefsPatch } from '../prefs.js';

// The desktop app's bridge: every call the renderer may make and every event it receives, in one
// schema. The Electron preload, the main-side handler registry, the web shell (HTTP + WebSocket,
// served by the engine's LocalAPI) and the renderer's client are all typed and validated from it.
//
// Transports carry one envelope each way:
//   call:   { method, input } → BridgeResult ({ ok: true, value } | { ok: false, error })
//   event:  { event, payload }  (BridgeEventMessage)
// Electron: ipcRenderer.invoke(BRIDGE_IPC.call, method, input) and the BRIDGE_IPC.event channel.
// Web shell: POST WEB_BRIDGE.call/<method> with the input as the JSON body, and a WebSocket at
// WEB_BRIDGE.events sending BridgeEventMessage frames; both need the token from the shell's URL.

// ───────────────────────────── values ─────────────────────────────

/** True for an absolute http(s) URL with a host and no credentials or fragment. */
export function isControlUrl(text: string): boolean {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return false;
  }
  return (
    (u.protocol === 'https:' || u.protocol === 'http:') &&
    u.hostname !== '' &&
    u.username === '' &&
    u.password === '' &&
    u.hash === ''
  );
}

/** A control server URL as a person types it: trimmed, http(s) only. */
export const ControlUrl = z
  .string()
  .trim()
  .min(1, 'Enter the address of your control server')
  .max(2048, 'That address is too long')
  .refine(isControlUrl, 'Enter a full address starting with https:// (or http:// for a local server)');

/** How a peer's packets travel: straight to its endpoint, through the relay, or not yet at all. */
export const PeerPath = z.enum(['direct', 'relay', 'none']);
export type PeerPath = z.infer<typeof PeerPath>;

/**
 * A peer as the UI sees it: the LocalAPI's PeerStatus plus fields the engine does not report yet.
 * Every extra field is optional so today's Status validates; the UI falls back when one is absent.
 */
export const BridgePeer = PeerStatus.extend({
  /** Direct or relayed (engine's path selection). Absent: inferred from the endpoint. */
  path: PeerPath.optional(),
  /** The peer offers an approved exit node. */
  exitNodeOption: z.boolean().optional(),
  /** Round-trip time to the peer in ms when measured. */
  latencyMs: z.number().nonnegative().nullable().optional(),
  /** Free-text location (city, country) the peer's admin gave it. */
  location: z.string().max(128).nullable().optional(),
  keyExpiry: z.string().nullable().optional(),
});
export type BridgePeer = z.infer<typeof BridgePeer>;

export const UserInfo = z.strictObject({
  loginName: z.string(),
  displayName: z.string(),
});
export type UserInfo = z.infer<typeof UserInfo>;

export const BridgeSelf = z.strictObject({
  id: z.string(),
  name: z.string(),
  addresses: z.array(z.string()),
  os: z.string().optional(),
  /** ISO time the node key expires; null when expiry is disabled. */
  keyExpiry: z.string().nullable().optional(),
});
export type BridgeSelf = z.infer<typeof BridgeSelf>;

export const ExitNodeChoice = z.strictObject({ id: z.string(), allowLan: z.boolean() });
export type ExitNodeChoice = z.infer<typeof ExitNodeChoice>;

/** The LocalAPI Status, with the optional fields the UI needs that the engine may add. */
export const EngineStatus = Status.extend({
  self: BridgeSelf.nullable(),
  peers: z.array(BridgePeer),
  /** The exit node in use; null or absent for none. */
  exitNode: ExitNodeChoice.nullable().optional(),
  /** The engine's suggestion (`weft exit-node suggest`). */
  recommendedExitNodeId: z.string().nullable().optional(),
  user: UserInfo.nullable().optional(),
});
export type EngineStatus = z.infer<typeof EngineStatus>;

export const HelperPhase = z.enum(['starting', 'running', 'restarting', 'failed', 'external']);
export type HelperPhase = z.infer<typeof HelperPhase>;

/** The privileged helper as electron's supervisor sees it. */
export const HelperState = z.strictObject({
  phase: HelperPhase,
  restarts: z.number().int().nonnegative(),
  /** What went wrong last, in plain words. */
  message: z.string().nullable(),
  /** ISO time of the next restart attempt while restarting. */
  nextAttemptAt: z.string().nullable(),
});
export type HelperState = z.infer<typeof HelperState>;

export const Theme = z.enum(['system', 'light', 'dark']);
export type Theme = z.infer<typeof Theme>;

/**
 * The app's own settings, UI only (kept by electron, or by the web shell). What the engine does
 * (exit node, allow-LAN, what this device advertises) is the engine's Prefs, shown in engine.prefs.
 */
export const Preferences = z.strictObject({
  /** The control server last used, offered on the sign-in screen. */
  controlUrl: z.string().max(2048),
  launchAtLogin: z.boolean(),
  notifications: z.boolean(),
  theme: Theme,
  /** Exit node ids, most recently used first. */
  recentExitNodes: z.array(z.string()).max(5),
});
export type Preferences = z.infer<typeof Preferences>;

export const LoginPhase = z.enum(['idle', 'starting', 'waiting', 'error']);
export const LoginState = z.strictObject({
  phase: LoginPhase,
  /** The URL to open in a browser to sign in, while waiting. */
  authUrl: z.string().nullable(),
  error: z.string().nullable(),
});
export type LoginState = z.infer<typeof LoginState>;

export const PendingAction = z.enum(['connect', 'disconnect', 'exit-node', 'logout']);

/** Everything the UI shows: one snapshot at boot, then a new one with every change. */
export const AppState = z.strictObject({
  /** Increases with every change; a client keeps the highest it has seen. */
  seq: z.number().int().nonnegative(),
  /** null while the engine cannot be reached (see engineError). */
  engine: EngineStatus.nullable(),
  engineError: z.string().nullable(),
  helper: HelperState,
  login: LoginState,
  prefs: Preferences,
  pending: PendingAction.nullable(),
  shell: z.enum(['electron', 'web']),
  version: z.string(),
});
export type AppState = z.infer<typeof AppState>;

/** Screens the main process may ask the renderer to show (tray "Preferences", deep links). */
export const View = z.enum(['main', 'exit-nodes', 'settings']);
export type View = z.infer<typeof View>;

// ───────────────────────────── calls and events ─────────────────────────────

const NoInput = z.strictObject({});
const Ack = z.strictObject({ ok: z.literal(true) });

/** The Settings screen's changes: the app's own settings, and what the engine advertises. */
export const PreferencesPatch = Preferences.pick({ launchAtLogin: true, notifications: true, theme: true })
  .extend({ controlUrl: ControlUrl })
  .partial()
  .extend(PrefsPatch.pick({ advertiseExitNode: true, advertiseRoutes: true }).shape);
export type PreferencesPatch = z.infer<typeof PreferencesPatch>;

export const bridgeCalls = {
  /** The full snapshot to boot from. */
  getState: { input: NoInput, output: AppState },
  connect: { input: NoInput, output: Ack },
  disconnect: { input: NoInput, output: Ack },
  /** Starts interactive sign-in; the auth URL arrives in state.login (electron also opens it). */
  login: { input: z.strictObject({ controlUrl: ControlUrl }), output: Ack },
  cancelLogin: { input: NoInput, output: Ack },
  /** Opens the pending auth URL in the system browser (never any other URL). */
  openAuthUrl: { input: NoInput, output: Ack },
  logout: { input: NoInput, output: Ack },
  setExitNode: {
    input: z.strictObject({ id: z.string().min(1).max(256).nullable(), allowLan: z.boolean() }),
    output: Ack,
  },
  copyText: { input: z.strictObject({ text: z.string().min(1).max(4096) }), output: Ack },
  setPreferences: { input: PreferencesPatch, output: Ack },
} as const;

export const bridgeEvents = {
  state: AppState,
  /** Something to tell the person once ("Copied", an error that is not part of state). */
  notice: z.strictObject({ level: z.enum(['info', 'error']), message: z.string().max(1024) }),
  /** Main asks the renderer to show a screen. */
  navigate: z.strictObject({ view: View }),
} as const;

export type BridgeCalls = typeof bridgeCalls;
export type CallName = keyof BridgeCalls;
export type CallInput<K extends CallName> = z.input<BridgeCalls[K]['input']>;
export type ParsedCallInput<K extends CallName> = z.output<BridgeCalls[K]['input']>;
export type CallOutput<K extends CallName> = z.output<BridgeCalls[K]['output']>;
export type BridgeEvents = typeof bridgeEvents;
export type EventName = keyof BridgeEvents;
export type EventPayload<E extends EventName> = z.output<BridgeEvents[E]>;

export const CALL_NAMES = Object.keys(bridgeCalls) as CallName[];
export const EVENT_NAMES = Object.keys(bridgeEvents) as EventName[];

export function isCallName(name: unknown): name is CallName {
  return typeof name === 'string' && Object.hasOwn(bridgeCalls, name);
}

export const BridgeErrorBody = z.strictObject({
  code: z.enum(['bad-method', 'bad-input', 'bad-output', 'failed', 'unavailable']),
  message: z.string(),
});
export type BridgeErrorBody = z.infer<typeof BridgeErrorBody>;

export const BridgeResult = z.union([
  z.strictObject({ ok: z.literal(true), value: z.unknown() }),
  z.strictObject({ ok: z.literal(false), error: BridgeErrorBody }),
]);
export type BridgeResult = z.infer<typeof BridgeResult>;

export const BridgeEventMessage = z.discriminatedUnion('event', [
  z.strictObject({ event: z.literal('state'), payload: bridgeEvents.state }),
  z.strictObject({ event: z.literal('notice'), payload: bridgeEvents.notice }),
  z.strictObject({ event: z.literal('navigate'), payload: bridgeEvents.navigate }),
]);
export type BridgeEventMessage = { [E in EventName]: { event: E; payload: EventPayload<E> } }[EventName];

export const BRIDGE_IPC = { call: 'weft:bridge:call', event: 'weft:bridge:event' } as const;
export const WEB_BRIDGE = {
  call: '/bridge/v0/call',
  events: '/bridge/v0/events',
  /** Query parameter (or URL fragment key) that carries the shell's token. */
  tokenParam: 'token',
} as const;

/** An error a handler throws to send the renderer a plain-words message. */
export class BridgeError extends Error {
  constructor(
    readonly code: BridgeErrorBody['code'],
    message: string,
  ) {
    super(message);
    this.name = 'BridgeError';
  }
}

// ───────────────────────────── typed ends ─────────────────────────────

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

// ───────────────────────────── derived views of the state ─────────────────────────────
// Pure functions shared by the tray (electron) and the renderer, so both say the same thing.

/** What the tray icon shows. */
export type ConnectionPhase =
  | 'needs-login'
  | 'connecting'
  | 'connected'
  | 'exit-node'
  | 'disconnected'
  | 'error';

export function connectionPhase(s: AppState): ConnectionPhase {
  if (s.engine === null || s.helper.phase === 'failed') return 'error';
  if (s.login.phase === 'waiting' || s.login.phase === 'starting') return 'needs-login';
  const backend = s.engine.backendState;
  if (backend === 'NeedsLogin') return 'needs-login';
  if (s.pending === 'connect' || backend === 'Starting' || s.helper.phase === 'restarting')
    return 'connecting';
  if (backend === 'Running') return s.engine.exitNode ? 'exit-node' : 'connected';
  return 'disconnected';
}

/** The address to show and copy: the first IPv4 one, without its prefix length. */
export function primaryAddress(addresses: readonly string[]): string | null {
  const bare = addresses.map((a) => a.replace(/\/\d+$/, ''));
  return bare.find((a) => !a.includes(':')) ?? bare[0] ?? null;
}

function isLoopbackEndpoint(endpoint: string): boolean {
  const ep = parseEndpoint(endpoint);
  if (!ep) return false;
  if (ep.addr.family === 6) return ep.addr.value === 1n;
  return ep.addr.value >> 24n === 127n;
}

/**
 * A peer's path: the engine's word when it gives one; otherwise an endpoint on loopback is the
 * relay proxy, any other endpoint with a handshake is direct, and no handshake is no path yet.
 */
export function peerPath(p: BridgePeer): PeerPath {
  if (p.path) return p.path;
  if (!p.online || p.endpoint === null || p.lastHandshake === null) return 'none';
  return isLoopbackEndpoint(p.endpoint) ? 'relay' : 'direct';
}

export interface PathCounts {
  total: number;
  online: number;
  direct: number;
  relay: number;
}

export function pathCounts(peers: readonly BridgePeer[]): PathCounts {
  const c: PathCounts = { total: peers.length, online: 0, direct: 0, relay: 0 };
  for (const p of peers) {
    if (p.online) c.online++;
    const path = peerPath(p);
    if (path === 'direct') c.direct++;
    else if (path === 'relay') c.relay++;
  }
  return c;
}

export interface ExitNodeOptions {
  /** The suggested node, if any online one exists. */
  recommended: BridgePeer | null;
  /** Every exit node: recently used first (most recent first), then online, then by name. */
  list: BridgePeer[];
  current: BridgePeer | null;
  /** Allow-LAN for the exit node in use or the next one chosen: the engine remembers it. */
  allowLan: boolean;
}

export function exitNodeOptions(s: AppState): ExitNodeOptions {
  const peers = s.engine?.peers ?? [];
  const options = peers.filter((p) => p.exitNodeOption);
  const recentRank = (id: string) => {
    const i = s.prefs.recentExitNodes.indexOf(id);
    return i === -1 ? Number.POSITIVE_INFINITY : i;
  };
  const list = [...options].sort(
    (a, b) =>
      recentRank(a.id) - recentRank(b.id) ||
      Number(b.online) - Number(a.online) ||
      a.name.localeCompare(b.name),
  );
  const suggestedId = s.engine?.recommendedExitNodeId;
  let recommended = options.find((p) => p.id === suggestedId && p.online) ?? null;
  if (!recommended) {
    const online = options.filter((p) => p.online);
    online.sort(
      (a, b) =>
        (a.latencyMs ?? Number.POSITIVE_INFINITY) - (b.latencyMs ?? Number.POSITIVE_INFINITY) ||
        a.name.localeCompare(b.name),
    );
    recommended = online[0] ?? null;
  }
  const currentId = s.engine?.exitNode?.id;
  const current = currentId ? (peers.find((p) => p.id === currentId) ?? null) : null;
  const allowLan =
    s.engine?.exitNode?.allowLan ?? s.engine?.prefs?.exitNodeAllowLan ?? PREFS_DEFAULTS.exitNodeAllowLan;
  return { recommended, list, current, allowLan };
}

/** Days until the node key expires (fractional), or null when it does not expire / is unknown. */
export function keyExpiresInDays(s: AppState, now: Date): number | null {
  const at = s.engine?.self?.keyExpiry;
  if (!at) return null;
  const t = Date.parse(at);
  if (Number.isNaN(t)) return null;
  return (t - now.getTime()) / 86_400_000;
}

/** Checks a list of routes typed as text ("198.51.100.0/24, 203.0.113.0/24"). */
export function parseRoutesText(text: string): { routes: string[] } | { error: string } {
  const parts = text
    .split(/[\s,]+/)
    .map((p) => p.trim())
    .filter(Boolean);
  for (const p of parts) {
    if (parsePrefix(p, { strict: true }) === null)
      return { error: `${p} is not a route (like 198.51.100.0/24)` };
  }
  return { routes: [...new Set(parts)] };
}
