import {
  type AppState,
  type BridgePeer,
  connectionPhase,
  exitNodeOptions,
  keyExpiresInDays,
  pathCounts,
  peerPath,
  primaryAddress,
} from '@weft/protocol';
import { useId } from 'react';
import { filterPeers, osName, relativeTime } from '../store/reducers.js';
import { useWeft } from '../store/store.js';
import { CopyButton, ScreenHeading, SearchBox } from './common.js';
import { ChevronIcon, GlobeIcon } from './icons.js';

export function statusText(app: AppState): string {
  const phase = connectionPhase(app);
  const peers = app.engine?.peers ?? [];
  const c = pathCounts(peers);
  const { current } = exitNodeOptions(app);
  switch (phase) {
    case 'connecting':
      return 'Connecting…';
    case 'disconnected':
      return 'Disconnected';
    case 'needs-login':
      return 'Signed out';
    case 'error':
      return 'Not working';
    default: {
      const parts = [`Connected · ${c.direct} direct, ${c.relay} relayed`];
      if (phase === 'exit-node') parts.push(`exit node ${current?.name ?? app.engine?.exitNode?.id}`);
      return parts.join(' · ');
    }
  }
}

export function Home({ app }: { app: AppState }) {
  const engine = app.engine;
  const self = engine?.self;
  const run = useWeft((s) => s.run);
  const dispatch = useWeft((s) => s.dispatch);
  const busy = useWeft((s) => s.ui.busy);
  const phase = connectionPhase(app);
  const on = phase === 'connected' || phase === 'exit-node' || phase === 'connecting';
  const { current } = exitNodeOptions(app);
  const days = keyExpiresInDays(app, new Date());
  const toggleLabelId = useId();

  return (
    <section className="screen home" aria-labelledby="home-title">
      <div className="card device">
        <p className="eyebrow">This device</p>
        <div className="device-head">
          <ScreenHeading id="home-title">{self?.name ?? 'This device'}</ScreenHeading>
          <div className="toggle-wrap">
            <span id={toggleLabelId} className="sr-only">
              Connection
            </span>
            <button
              type="button"
              role="switch"
              className="switch big"
              aria-checked={on}
              aria-labelledby={toggleLabelId}
              disabled={Boolean(busy.connect || busy.disconnect)}
              onClick={() => run(on ? 'disconnect' : 'connect')}
            >
              <span className="switch-knob" />
            </button>
          </div>
        </div>
        <p className={`status-line status-${phase}`} role="status" aria-live="polite">
          <span className="dot" aria-hidden="true" />
          {statusText(app)}
        </p>
        <ul className="addresses" aria-label="Addresses of this device">
          {self?.dnsName && (
            <li>
              <span className="mono">{self.dnsName}</span>
              <CopyButton text={self.dnsName} label={`Copy ${self.dnsName}`} />
            </li>
          )}
          {(self?.addresses ?? []).map((a) => {
            const bare = a.replace(/\/\d+$/, '');
            return (
              <li key={a}>
                <span className="mono">{bare}</span>
                <CopyButton text={bare} label={`Copy ${bare}`} />
              </li>
            );
          })}
        </ul>
        {self?.os && <p className="muted small">{osName(self.os)}</p>}
      </div>

      {days !== null && days < 7 && (
        <div className="banner banner-warn" role="alert">
          <span>
            {days <= 0
              ? 'This device’s key has expired.'
              : `This device’s key expires in ${Math.ceil(days)} days.`}
          </span>
          <button
            type="button"
            className="button small"
            onClick={() => run('login', { controlUrl: engine?.controlUrl ?? app.prefs.controlUrl })}
          >
            Sign in again
          </button>
        </div>
      )}
      {engine?.health.map((h) => (
        <p key={h} className="banner banner-warn">
          {h}
        </p>
      ))}

      <button
        type="button"
        className="row-button card"
        onClick={() => dispatch({ type: 'navigate', view: 'exit-nodes' })}
      >
        <GlobeIcon />
        <span className="row-text">
          <span>Exit node</span>
          <span className="muted small">{current ? current.name : 'None'}</span>
        </span>
        <ChevronIcon />
      </button>

      <Peers app={app} />
    </section>
  );
}

function Peers({ app }: { app: AppState }) {
  const query = useWeft((s) => s.ui.peerQuery);
  const dispatch = useWeft((s) => s.dispatch);
  const peers = app.engine?.peers ?? [];
  const shown = filterPeers(peers, query);
  const now = Date.now();
  return (
    <section className="peers" aria-labelledby="peers-title">
      <h2 id="peers-title" className="section-title">
        Network devices <span className="muted">({peers.length})</span>
      </h2>
      <SearchBox
        label="Search devices"
        value={query}
        onChange={(query) => dispatch({ type: 'peerQuery', query })}
      />
      {shown.length === 0 ? (
        <p className="muted empty">
          {peers.length === 0 ? 'No other devices yet.' : `No devices match “${query}”.`}
        </p>
      ) : (
        <ul className="peer-list" aria-label="Devices">
          {shown.map((p) => (
            <PeerRow key={p.id} peer={p} now={now} />
          ))}
        </ul>
      )}
    </section>
  );
}

function PeerRow({ peer, now }: { peer: BridgePeer; now: number }) {
  const addr = primaryAddress(peer.addresses);
  const path = peerPath(peer);
  const seen = relativeTime(peer.lastSeen, now);
  return (
    <li className="peer" aria-label={peer.name}>
      <div className="peer-main">
        <span className="peer-name">
          <span className={`dot ${peer.online ? 'online' : 'offline'}`} aria-hidden="true" />
          {peer.dnsName ?? peer.name}
          {peer.exitNodeOption && <span className="badge">exit node</span>}
        </span>
        <span className="peer-meta muted small">
          {peer.online ? 'Online' : `Offline${seen ? ` · last seen ${seen}` : ''}`}
          {peer.online && path !== 'none' && ` · ${path === 'direct' ? 'Direct' : 'Relayed'}`}
          {peer.online && path === 'relay' && peer.relayReason && ` (${peer.relayReason})`}
          {` · ${osName(peer.os)}`}
        </span>
      </div>
      {addr && (
        <div className="peer-addr">
          <span className="mono small">{addr}</span>
          {peer.dnsName && (
            <CopyButton text={peer.dnsName} label={`Copy name of ${peer.name} (${peer.dnsName})`} />
          )}
          <CopyButton text={addr} label={`Copy address of ${peer.name} (${addr})`} />
        </div>
      )}
    </li>
  );
}
