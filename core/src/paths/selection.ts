import type { NodeView, WgPeerStatus } from '@weft/protocol';
import { CALL_ME_MAYBE_MAX_CANDIDATES, parseEndpoint } from '@weft/protocol';
import { Backoff } from '../retry/backoff.js';
import type { RelayHold } from './relay-proxy.js';

/**
 * The WireGuard endpoint to configure for a peer when no relay is available: its first candidate,
 * or undefined to wait for the peer to reach us (WireGuard learns an endpoint from any
 * authenticated packet).
 */
export function choosePeerEndpoint(peer: NodeView): string | undefined {
  return peer.endpoints[0];
}

// Path selection, one WireGuard socket per node and no packets of our own on it (WireGuard owns the
// socket). Each peer's WireGuard endpoint is either a direct candidate or the engine's loopback
// relay proxy for that peer; WireGuard's roaming (it moves a peer's endpoint to wherever the last
// authenticated packet came from) does most of the work, and this state machine only decides what
// endpoint to *request*, from what the interface reports (endpoint, rx/tx bytes) at each poll:
//
//   relay    endpoint = loopback proxy; traffic flows at once through the relay. Trials are paced
//            with back-off: each sets one direct candidate for a short window and "pokes" (sends a
//            datagram into the tunnel to the peer, so WireGuard sends a packet to the candidate).
//            That packet opens our NAT towards the peer; if it gets through, the peer roams to us.
//   trying   a candidate is set (or the peer's packets made WireGuard roam to a direct address):
//            confirmed when bytes arrive while the endpoint stays direct; otherwise back to relay
//            (WireGuard may already be there: a relayed packet from the peer roams it back).
//            A relayed peer's trial keeps its traffic on the relay unless the candidate answers,
//            as Tailscale's magicsock keeps sending on the best known path until a new one is heard
//            from (see TrialPhase): only one packet has to reach the candidate, to open our NAT.
//   direct   confirmed. The endpoint WireGuard roams to is adopted as the requested one, so that a
//            later fall-back is a change the helper applies (it only sets requested changes).
//            Dead when something we sent stays unanswered (peers answer any packet within about a
//            poll interval, see `answers`), or nothing arrives for longer than two keepalives:
//            back to the relay, and trials resume.
//
// Answers: when bytes arrived from a peer on a direct endpoint and we sent nothing back since, the
// engine pokes it (at most every `answerGapMs`), a faster passive keepalive, so the sender learns
// within a second or two whether its direct path works.

export type PathMode = 'relay' | 'trying' | 'direct';

export interface PathTiming {
  /** Delay before the first trial of a new peer or new candidates. */
  firstTrialMs: number;
  /** How long one candidate is tried. */
  trialMs: number;
  /**
   * A trial that sent something and got nothing back for this long ends early: while a candidate
   * is tried, what we send goes to it, so a dead one must not swallow traffic for long.
   */
  trialQuietMs: number;
  /** How often to poke during a trial. */
  pokeMs: number;
  /**
   * How long a relayed peer's trial stays on its candidate once the interface shows it (opening,
   * see TrialPhase): long enough for a peer trying us at the same time to answer there, whose
   * answer would otherwise meet our move back to the relay; then it waits on the relay.
   */
  openMs: number;
  /** Pacing of failed trial rounds (exponential back-off with jitter). */
  retryBaseMs: number;
  retryCapMs: number;
  /** Something sent and nothing received for this long on a direct path: it is dead. */
  unansweredMs: number;
  /** Nothing at all received for this long on a direct path: it is dead. */
  silentMs: number;
  /** At most one answer-poke per peer per this interval. */
  answerGapMs: number;
  /**
   * How long one candidate of a peer the relay does not reach is tried: past one WireGuard
   * handshake retry (5 s), since a Tailscale client drops initiations until it has configured us.
   */
  relaylessTrialMs: number;
}

/**
 * Where a relayed peer's trial is:
 *   opening    the candidate is requested; once the interface shows it, pokes make WireGuard send
 *              there, which opens our NAT towards it, for `openMs`. What the relay delivers from the
 *              peer meanwhile is queued (not dropped), or WireGuard would roam back to the relay.
 *   listening  nothing came back: the relay is requested again and the queue delivered, so traffic
 *              goes on as before the trial (a relay-only pair loses only what it sent during the
 *              opening). Waits for the peer's packets to arrive directly (WireGuard roams to them).
 *   answered   they did: the direct endpoint is requested and relayed packets are dropped, so
 *              WireGuard stays there until the path is confirmed or stays unanswered.
 */
type TrialPhase = 'opening' | 'listening' | 'answered';

/** How often a trial waiting for the relay socket or a first session looks again. */
const SESSION_WAIT_MS = 100;

/** How long after a trial its candidate, still on the device, is not taken for the peer's roam. */
const STALE_TRIAL_MS = 1000;
/** The most candidates a peer's calls and the netmap may give us for it together. */
const MAX_CALLED_CANDIDATES = 2 * CALL_ME_MAYBE_MAX_CANDIDATES;

export const DEFAULT_PATH_TIMING: PathTiming = {
  firstTrialMs: 300,
  trialMs: 2500,
  trialQuietMs: 1500,
  pokeMs: 400,
  openMs: 700,
  retryBaseMs: 2000,
  retryCapMs: 30_000,
  unansweredMs: 3500,
  silentMs: 60_000,
  answerGapMs: 1500,
  relaylessTrialMs: 5500,
};

export interface PathPeer {
  key: string;
  /** Direct candidates, in the order to try them. */
  candidates: string[];
  /**
   * False for a peer the relay gives no path to (a Tailscale client sees Weft nodes as
   * WireGuard-only peers and never answers through a relay): it is never moved to the relay,
   * its candidates are tried in turn until one answers.
   */
  viaRelay?: boolean;
}

export interface PeerPathInfo {
  mode: PathMode;
  /** The endpoint requested from the helper now (undefined: none yet). */
  requested: string | undefined;
  /** The candidate being tried, while trying. */
  trying: string | null;
}

interface PeerState {
  key: string;
  candidates: string[];
  viaRelay: boolean;
  mode: PathMode;
  requested: string | undefined;
  /** Index in candidates of the candidate being tried; -1 when the peer roamed to us. */
  trialIndex: number;
  trialEndpoint: string | null;
  /** When the last trial ended (its candidate may linger on the device until the helper acts). */
  trialEndedAt: number;
  /**
   * Whether the interface has shown the trial's candidate yet: the window counts from then, so a
   * slow helper (a loaded machine) does not eat the trial.
   */
  trialApplied: boolean;
  /** When the interface first showed the candidate (the opening poke went out then). */
  trialAppliedAt: number;
  trialPhase: TrialPhase;
  /** How the peer's relayed packets are held back now (told through onHold). */
  held: RelayHold;
  trialUntil: number;
  nextTrialAt: number;
  lastPokeAt: number;
  /** When a call last started a trial (see callMeMaybe). */
  lastCalledTrialAt: number;
  backoff: Backoff;
  prev: WgPeerStatus | null;
  /** Whether WireGuard has had a session with the peer (over the relay at first). */
  session: boolean;
  lastRxAt: number;
  /** When something was first sent after the last receipt; null when all answered. */
  unansweredSince: number | null;
}

export interface PathManagerOptions {
  timing?: Partial<PathTiming>;
  /** The loopback relay proxy endpoint for a peer; undefined when there is no relay to use. */
  relayEndpoint: (key: string) => string | undefined;
  /** Makes WireGuard send a packet to the peer now (a datagram into the tunnel). */
  poke: (key: string) => void;
  /**
   * This node's key: of two peers waiting for a first session, only the one with the lower key
   * pokes for it. Both handshaking at once (a call makes them act together) leaves each holding
   * the other's initiation and dropping the answer to its own, until WireGuard retries 5 s later.
   */
  selfKey?: string;
  /**
   * Told when a relayed peer's candidates are new (a new peer, or its mapping moved): the caller
   * asks the peer over the relay to try us now ("call me maybe"), as this node starts its trial.
   */
  onNewCandidates?: (key: string) => void;
  /**
   * Told how the caller is to hold back what the relay delivers from a peer (RelayProxy.hold):
   * queued while a trial opens its candidate, dropped once the candidate answered (TrialPhase),
   * so WireGuard stays on the direct endpoint; 'off' otherwise.
   */
  onHold?: (key: string, hold: RelayHold) => void;
  random?: () => number;
  /** Told of every mode change (and of a trial's candidate answering), for the log. */
  onTransition?: (
    key: string,
    from: PathMode,
    to: PathMode,
    why: string,
    endpoint: string | undefined,
  ) => void;
}

export function isLoopbackEndpoint(endpoint: string | null | undefined): boolean {
  if (!endpoint) return false;
  const e = parseEndpoint(endpoint);
  if (e === null) return false;
  return e.addr.family === 4 ? endpoint.startsWith('127.') : /^\[::1\]:/.test(endpoint);
}

export class PathManager {
  private readonly peers = new Map<string, PeerState>();
  private readonly timing: PathTiming;

  constructor(private readonly opts: PathManagerOptions) {
    this.timing = { ...DEFAULT_PATH_TIMING, ...opts.timing };
  }

  /** Sets the peers (from the netmap). Returns true when a requested endpoint changed. */
  setPeers(peers: PathPeer[], now: number): boolean {
    let changed = false;
    const keep = new Set(peers.map((p) => p.key));
    for (const [key, st] of this.peers) {
      if (keep.has(key)) continue;
      this.hold(st, 'off');
      this.peers.delete(key);
    }
    for (const p of peers) {
      let st = this.peers.get(p.key);
      if (!st) {
        st = {
          key: p.key,
          candidates: p.candidates,
          viaRelay: p.viaRelay !== false,
          mode: 'relay',
          requested: undefined,
          trialIndex: -1,
          trialEndpoint: null,
          trialEndedAt: -Infinity,
          trialApplied: false,
          trialAppliedAt: 0,
          trialPhase: 'opening',
          held: 'off',
          trialUntil: 0,
          nextTrialAt: now + this.timing.firstTrialMs,
          lastPokeAt: 0,
          lastCalledTrialAt: -Infinity,
          backoff: new Backoff({
            baseMs: this.timing.retryBaseMs,
            capMs: this.timing.retryCapMs,
            random: this.opts.random,
          }),
          prev: null,
          session: false,
          lastRxAt: now,
          unansweredSince: null,
        };
        this.peers.set(p.key, st);
        if (st.viaRelay && st.candidates.length > 0) this.opts.onNewCandidates?.(st.key);
      } else if (p.candidates.join(' ') !== st.candidates.join(' ')) {
        st.candidates = p.candidates;
        st.trialIndex = -1;
        // New candidates (a peer's mapping moved, or it just learned it): try them soon.
        st.backoff.reset();
        if (st.mode === 'relay') st.nextTrialAt = Math.min(st.nextTrialAt, now + this.timing.firstTrialMs);
        if (st.viaRelay && st.candidates.length > 0) this.opts.onNewCandidates?.(st.key);
        // A relay-less trial of a candidate the peer no longer lists would only waste its long window.
        const stale = st.mode === 'trying' && !p.candidates.includes(st.trialEndpoint as string);
        if (!st.viaRelay && stale && this.startRound(st, now, 'new candidates')) changed = true;
      }
      if (this.refreshRequest(st)) changed = true;
    }
    return changed;
  }

  /**
   * The peer asked us over the relay to try it now ("call me maybe"), with its current candidates
   * (already ordered): it is trying us at this moment, so a relayed peer's trial starts now and
   * the back-off starts over. `reported` is the list as the peer sent it (before ordering, which
   * drops mappings that vary by destination). Returns true when a requested endpoint changed.
   */
  callMeMaybe(
    key: string,
    candidates: string[],
    now: number,
    reported: readonly string[] = candidates,
  ): boolean {
    const st = this.peers.get(key);
    if (!st?.viaRelay) return false;
    // On a direct path to an address the peer no longer reports, the peer has moved (a new network,
    // its router renumbered): its new address is tried now, as it tries us, rather than after our
    // packets to the old one go unanswered and a back-off passes.
    const ip = (e: string) => e.slice(0, e.lastIndexOf(':'));
    const moved =
      st.mode === 'direct' &&
      st.requested !== undefined &&
      candidates.length > 0 &&
      !reported.some((e) => ip(e) === ip(st.requested as string));
    // Its own list first (fresher than the netmap's), then any the netmap adds; bounded, since
    // calls come one after another from whoever reaches us through the relay.
    const merged = [...new Set([...candidates, ...st.candidates])].slice(0, MAX_CALLED_CANDIDATES);
    if (merged.join(' ') !== st.candidates.join(' ')) {
      st.candidates = merged;
      st.trialIndex = -1;
    }
    st.backoff.reset();
    // A trial of another candidate than the caller's best would miss the caller's: start over
    // (unless the peer already answered it, or reached us directly).
    const retry =
      moved ||
      st.mode === 'relay' ||
      (st.mode === 'trying' && st.trialPhase !== 'answered' && st.trialEndpoint !== merged[0]);
    if (!retry) return false;
    // At most one called trial per trial window: each sends our traffic to the candidate while it
    // opens, so a peer calling again and again (flapping, or hostile) must not keep it off the relay.
    if (now - st.lastCalledTrialAt < this.timing.trialMs) return false;
    st.lastCalledTrialAt = now;
    st.trialIndex = -1;
    return this.startRound(st, now, moved ? 'the peer moved' : 'the peer called');
  }

  /**
   * This node's own network changed (new reflected mappings): whatever failed before may work now,
   * so every relayed peer is tried again at once instead of after its back-off.
   */
  retryAll(now: number): boolean {
    let changed = false;
    for (const st of this.peers.values()) {
      st.backoff.reset();
      if (st.mode === 'relay' && st.viaRelay && this.startRound(st, now, 'our network changed'))
        changed = true;
    }
    return changed;
  }

  /** The endpoint to request for a peer now. */
  endpointFor(key: string): string | undefined {
    return this.peers.get(key)?.requested;
  }

  info(key: string): PeerPathInfo | undefined {
    const st = this.peers.get(key);
    if (!st) return undefined;
    return { mode: st.mode, requested: st.requested, trying: st.mode === 'trying' ? st.trialEndpoint : null };
  }

  /** True while some peer is being tried: the engine polls faster then. */
  get busy(): boolean {
    for (const st of this.peers.values()) if (st.mode === 'trying') return true;
    return false;
  }

  /**
   * Feeds one reading of the interface (`wg` peers) taken at `now`; returns true when a requested
   * endpoint changed (the engine then re-applies the desired state).
   */
  observe(wg: readonly WgPeerStatus[], now: number): boolean {
    const byKey = new Map(wg.map((p) => [p.publicKey, p]));
    let changed = false;
    for (const st of this.peers.values()) {
      const cur = byKey.get(st.key);
      if (!cur) continue;
      if (this.step(st, cur, now)) changed = true;
      st.prev = cur;
    }
    return this.tick(now) || changed;
  }

  /** Runs timers without a new reading (trial windows, pokes). */
  tick(now: number): boolean {
    let changed = false;
    for (const st of this.peers.values()) {
      if (st.mode === 'trying' && now >= st.trialUntil) {
        if (this.nextCandidate(st, now)) changed = true;
      } else if (st.mode === 'relay' && now >= st.nextTrialAt) {
        if (this.startRound(st, now)) changed = true;
      }
      // A listening trial is back on the relay: pokes would only go there.
      const listening = st.viaRelay && st.trialPhase === 'listening';
      if (st.mode === 'trying' && !listening && now - st.lastPokeAt >= this.timing.pokeMs) this.poke(st, now);
    }
    return changed;
  }

  private step(st: PeerState, cur: WgPeerStatus, now: number): boolean {
    const prev = st.prev;
    const rxGrew = prev !== null && cur.rxBytes > prev.rxBytes;
    const txGrew = prev !== null && cur.txBytes > prev.txBytes;
    if (rxGrew) {
      st.lastRxAt = now;
      st.unansweredSince = null;
    } else if (txGrew && st.unansweredSince === null) {
      st.unansweredSince = now;
    }
    if (cur.latestHandshake !== null) st.session = true;
    const endpoint = cur.endpoint;
    const direct = endpoint !== null && !isLoopbackEndpoint(endpoint);
    const stable = direct && prev !== null && prev.endpoint === endpoint;

    // Answer what arrived directly, so the peer can tell its direct path works.
    if (direct && rxGrew && !txGrew && now - st.lastPokeAt >= this.timing.answerGapMs) this.poke(st, now);

    let changed = false;
    switch (st.mode) {
      case 'relay':
        // A roam shows as bytes received with a direct endpoint; the candidate of a trial that
        // just ended may still be on the device until the helper puts the relay back.
        if (
          direct &&
          rxGrew &&
          (endpoint !== st.trialEndpoint || stable || now - st.trialEndedAt > STALE_TRIAL_MS) &&
          (!st.viaRelay || this.opts.relayEndpoint(st.key) !== undefined)
        ) {
          // The peer's packets reached us directly and WireGuard roamed: confirm it from here.
          changed = this.enterTrial(st, endpoint, -1, now);
          st.lastRxAt = now;
        }
        break;
      case 'trying':
        if (!st.trialApplied && endpoint === st.trialEndpoint) {
          st.trialApplied = true;
          st.trialAppliedAt = now;
          st.trialUntil = Math.max(st.trialUntil, now + this.trialWindow(st));
          if (!rxGrew) st.unansweredSince = txGrew ? now : null;
          // WireGuard sends to the candidate from now: poke at once (the peer is trying us now).
          this.poke(st, now);
        }
        if (stable && rxGrew) {
          this.setMode(st, 'direct', 'packets arrived on the direct endpoint', endpoint);
          st.backoff.reset();
          st.unansweredSince = null;
          changed = this.request(st, endpoint);
        } else if (!st.viaRelay) {
          // Nothing to listen on meanwhile: the candidate stays until the window ends.
        } else if (st.trialPhase === 'opening') {
          // Nothing came back on the candidate for a while: wait for the peer on the relay.
          const relay = this.opts.relayEndpoint(st.key);
          if (relay && st.trialApplied && now - st.trialAppliedAt >= this.timing.openMs) {
            st.trialPhase = 'listening';
            this.hold(st, 'off');
            changed = this.request(st, relay);
          }
        } else if (st.trialPhase === 'listening') {
          // The peer's packets arrived directly (WireGuard roamed to them): answered.
          if (direct && rxGrew && endpoint !== null) changed = this.answered(st, endpoint, now);
        } else if (st.unansweredSince !== null && now - st.unansweredSince >= this.timing.trialQuietMs) {
          changed = this.nextCandidate(st, now);
        }
        break;
      case 'direct':
        if (!direct) {
          // The peer went back to the relay (its direct path died): follow it.
          changed = this.fallBack(st, now, 'the peer went back to the relay');
        } else if (st.unansweredSince !== null && now - st.unansweredSince >= this.timing.unansweredMs) {
          changed = this.fallBack(st, now, `nothing back for ${Math.round(now - st.unansweredSince)} ms`);
        } else if (now - st.lastRxAt >= this.timing.silentMs) {
          changed = this.fallBack(st, now, `silent for ${Math.round(now - st.lastRxAt)} ms`);
        } else if (endpoint !== st.requested) {
          // Roamed (the peer's NAT moved it): adopt, so a later fall-back is a change.
          changed = this.request(st, endpoint);
        }
        break;
    }
    return changed;
  }

  private setMode(st: PeerState, mode: PathMode, why: string, endpoint?: string): void {
    if (st.mode !== mode) this.opts.onTransition?.(st.key, st.mode, mode, why, endpoint);
    if (mode !== 'trying') this.hold(st, 'off');
    st.mode = mode;
  }

  /** Holds back the peer's relayed packets, or lets them through again (relayed peers only). */
  private hold(st: PeerState, how: RelayHold): void {
    const held = st.viaRelay ? how : 'off';
    if (st.held === held) return;
    st.held = held;
    this.opts.onHold?.(st.key, held);
  }

  /** A listening trial heard from the peer directly at `endpoint`: stay there until confirmed. */
  private answered(st: PeerState, endpoint: string, now: number): boolean {
    this.opts.onTransition?.(st.key, 'trying', 'trying', 'the candidate answered', endpoint);
    st.trialPhase = 'answered';
    this.hold(st, 'drop');
    st.unansweredSince = null;
    st.trialUntil = Math.max(st.trialUntil, now + this.trialWindow(st));
    // WireGuard is there now: answer at once, so the peer confirms its side too.
    this.poke(st, now);
    return this.request(st, endpoint);
  }

  private fallBack(st: PeerState, now: number, why: string): boolean {
    if (st.mode === 'trying') st.trialEndedAt = now;
    // Nothing to fall back to: on to the next candidate at once.
    if (!st.viaRelay && st.candidates.length > 0) return this.startRound(st, now, why);
    this.setMode(st, 'relay', why);
    st.unansweredSince = null;
    st.nextTrialAt = now + st.backoff.next();
    return this.refreshRequest(st);
  }

  private startRound(st: PeerState, now: number, why = 'trial'): boolean {
    if (st.candidates.length === 0) {
      st.nextTrialAt = now + st.backoff.next();
      return this.refreshRequest(st);
    }
    if (st.viaRelay && (this.opts.relayEndpoint(st.key) === undefined || !st.session)) {
      // The peer's relay socket is still binding, or WireGuard has no session with the peer yet:
      // a trial now would spend its first handshake on the candidate, and WireGuard sends the next
      // only 5 s later. Poke (the handshake goes over the relay, in milliseconds; one side only, see
      // selfKey) and look again shortly, without spending a back-off step: the trial's pokes then
      // are data packets, which leave at once.
      const initiator = this.opts.selfKey === undefined || this.opts.selfKey < st.key;
      if (initiator && now - st.lastPokeAt >= this.timing.pokeMs) this.poke(st, now);
      st.nextTrialAt = now + SESSION_WAIT_MS;
      return this.refreshRequest(st);
    }
    // One candidate per round, in turn: a round that fails costs at most one short window.
    const index =
      st.trialIndex >= 0 && st.trialIndex + 1 < Math.min(st.candidates.length, 4) ? st.trialIndex + 1 : 0;
    return this.enterTrial(st, st.candidates[index] as string, index, now, why);
  }

  private enterTrial(st: PeerState, endpoint: string, index: number, now: number, why = 'trial'): boolean {
    this.setMode(st, 'trying', index < 0 ? 'the peer reached us directly' : why, endpoint);
    st.trialIndex = index;
    st.trialEndpoint = endpoint;
    // The peer roamed to us: WireGuard is already there. Otherwise the helper has to set it first.
    st.trialApplied = index < 0;
    st.trialAppliedAt = now;
    st.trialPhase = index < 0 ? 'answered' : 'opening';
    this.hold(st, index < 0 ? 'drop' : 'queue');
    st.trialUntil = now + this.trialWindow(st);
    st.unansweredSince = null;
    const changed = this.request(st, endpoint);
    if (index < 0) {
      // WireGuard already sends to the peer's address: answer at once, the peer's trial is short.
      this.poke(st, now);
    } else {
      // The poke goes out once the helper has set the endpoint; the first one may still go to the
      // relay, which is harmless.
      st.lastPokeAt = now - this.timing.pokeMs + 150;
    }
    return changed;
  }

  private trialWindow(st: PeerState): number {
    return st.viaRelay ? this.timing.trialMs : this.timing.relaylessTrialMs;
  }

  private nextCandidate(st: PeerState, _now: number): boolean {
    return this.fallBack(st, _now, `no answer from ${st.trialEndpoint}`);
  }

  private poke(st: PeerState, now: number): void {
    st.lastPokeAt = now;
    this.opts.poke(st.key);
  }

  /** Sets `requested` from the mode: the relay proxy while relayed (or the first candidate without a relay). */
  private refreshRequest(st: PeerState): boolean {
    if (st.mode !== 'relay') return false;
    const relay = st.viaRelay ? this.opts.relayEndpoint(st.key) : undefined;
    return this.request(st, relay ?? st.candidates[0]);
  }

  private request(st: PeerState, endpoint: string | undefined): boolean {
    if (st.requested === endpoint) return false;
    st.requested = endpoint;
    return true;
  }

  /** Re-derives requests after the relay proxy came or went (e.g. the relay map changed). */
  refresh(): boolean {
    let changed = false;
    for (const st of this.peers.values()) {
      if (st.mode === 'trying' && st.viaRelay && this.opts.relayEndpoint(st.key) === undefined) {
        this.setMode(st, 'relay', 'no relay');
      }
      if (this.refreshRequest(st)) changed = true;
    }
    return changed;
  }
}
