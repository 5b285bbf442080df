import { type AppState, type BridgePeer, exitNodeOptions } from '@weft/protocol';
import { useId } from 'react';
import { filterPeers } from '../store/reducers.js';
import { useWeft } from '../store/store.js';
import { ScreenHeading, SearchBox, Switch } from './common.js';

export function ExitNodes({ app }: { app: AppState }) {
  const run = useWeft((s) => s.run);
  const dispatch = useWeft((s) => s.dispatch);
  const query = useWeft((s) => s.ui.exitQuery);
  const busy = useWeft((s) => Boolean(s.ui.busy.setExitNode));
  const { recommended, list, current, allowLan } = exitNodeOptions(app);
  const currentId = current?.id ?? app.engine?.exitNode?.id ?? null;
  const name = useId();
  const matches = new Set(filterPeers(list, query).map((p) => p.id));
  const others = list.filter((p) => p.id !== recommended?.id && matches.has(p.id));
  const showRecommended = recommended !== null && matches.has(recommended.id);

  const choose = (id: string | null) => run('setExitNode', { id, allowLan });

  const option = (p: BridgePeer, prefix?: string) => {
    const detail = [
      p.location,
      p.online ? (p.latencyMs != null ? `${Math.round(p.latencyMs)} ms` : null) : 'offline',
    ]
      .filter(Boolean)
      .join(' · ');
    return (
      <label key={p.id} className={`choice ${p.online ? '' : 'disabled'}`}>
        <input
          type="radio"
          name={name}
          value={p.id}
          checked={currentId === p.id}
          disabled={!p.online || busy}
          onChange={() => choose(p.id)}
        />
        <span className="choice-text">
          <span>
            {prefix && <span className="badge">{prefix}</span>} {p.name}
          </span>
          {detail && <span className="muted small">{detail}</span>}
        </span>
      </label>
    );
  };

  return (
    <section className="screen" aria-labelledby="exit-title">
      <ScreenHeading id="exit-title">Exit node</ScreenHeading>
      <p className="muted">Send all your internet traffic through another device in your network.</p>
      <SearchBox
        label="Search exit nodes"
        value={query}
        onChange={(query) => dispatch({ type: 'exitQuery', query })}
      />
      <fieldset className="card choices">
        <legend className="sr-only">Use exit node</legend>
        <label className="choice">
          <input
            type="radio"
            name={name}
            value=""
            checked={currentId === null}
            disabled={busy}
            onChange={() => choose(null)}
          />
          <span className="choice-text">
            <span>None</span>
            <span className="muted small">Use this device's own internet connection</span>
          </span>
        </label>
        {showRecommended && recommended && option(recommended, 'Recommended')}
        {others.map((p) => option(p))}
        {list.length === 0 && <p className="muted empty">No device in your network offers an exit node.</p>}
        {list.length > 0 && others.length === 0 && !showRecommended && (
          <p className="muted empty">No exit node matches “{query}”.</p>
        )}
      </fieldset>
      <div className="card">
        <Switch
          label="Allow local network access"
          description="Reach printers and other devices on your local network while using an exit node."
          checked={allowLan}
          disabled={busy}
          onChange={(next) => run('setExitNode', { id: currentId, allowLan: next })}
        />
      </div>
    </section>
  );
}
