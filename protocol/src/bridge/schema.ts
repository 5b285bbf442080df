import { z } from 'zod';
import { PeerStatus, Status } from '../localapi.js';
import { PrefsPatch } from '../prefs.js';

// The desktop app's bridge: every call the renderer may make and every event it receives, in one
// schema. The Electron preload, the main-side handler registry, the web shell (HTTP + WebSocket,
// served by the engine's LocalAPI) and the renderer's client are all typed and validated from it.
//
// How the envelopes travel is transport.ts; what the UI derives from the state is views.ts.

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
  /** NAME.BASE-DOMAIN while MagicDNS is on. */
  dnsName: z.string().optional(),
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

/** The Settings screen's changes: the app's own settings, what the engine advertises, tailnet DNS. */
export const PreferencesPatch = Preferences.pick({ launchAtLogin: true, notifications: true, theme: true })
  .extend({ controlUrl: ControlUrl })
  .partial()
  .extend(PrefsPatch.pick({ advertiseExitNode: true, advertiseRoutes: true, useTailnetDns: true }).shape);
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
