import { type AppState, ControlUrl, PREFS_DEFAULTS, parseRoutesText, type Theme } from '@weft/protocol';
import { type FormEvent, useId, useState } from 'react';
import { useWeft } from '../store/store.js';
import { ScreenHeading, Switch } from './common.js';

export function Settings({ app }: { app: AppState }) {
  const run = useWeft((s) => s.run);
  const busy = useWeft((s) => s.ui.busy);
  const engine = app.engine;
  const prefs = app.prefs;
  const advertiseExitNode = engine?.prefs?.advertiseExitNode ?? PREFS_DEFAULTS.advertiseExitNode;
  const advertiseRoutes = engine?.prefs?.advertiseRoutes ?? PREFS_DEFAULTS.advertiseRoutes;
  const useTailnetDns = engine?.prefs?.useTailnetDns ?? PREFS_DEFAULTS.useTailnetDns;
  const signedIn = engine?.backendState !== 'NeedsLogin' && engine?.self != null;
  const themeName = useId();

  return (
    <section className="screen" aria-labelledby="settings-title">
      <ScreenHeading id="settings-title">Settings</ScreenHeading>

      <section className="card" aria-labelledby="account-title">
        <h2 id="account-title" className="section-title">
          Account
        </h2>
        {signedIn ? (
          <p>
            Signed in as{' '}
            <strong>{engine?.user?.displayName ?? engine?.user?.loginName ?? 'unknown user'}</strong>
            {engine?.user?.loginName && engine.user.displayName !== engine.user.loginName && (
              <span className="muted small block">{engine.user.loginName}</span>
            )}
          </p>
        ) : (
          <p className="muted">Not signed in.</p>
        )}
        <ControlUrlField key={prefs.controlUrl} value={prefs.controlUrl || engine?.controlUrl || ''} />
        {signedIn && (
          <button
            type="button"
            className="button danger"
            disabled={Boolean(busy.logout)}
            onClick={() => run('logout')}
          >
            Sign out
          </button>
        )}
      </section>

      <section className="card" aria-labelledby="device-title">
        <h2 id="device-title" className="section-title">
          This device
        </h2>
        <Switch
          label="Run as exit node"
          description="Offer this device's internet connection to others (an admin approves it)."
          checked={advertiseExitNode}
          onChange={(next) => run('setPreferences', { advertiseExitNode: next })}
        />
        <RoutesField key={advertiseRoutes.join(',')} routes={advertiseRoutes} />
        <Switch
          label="Use tailnet DNS"
          description="Reach devices by name, and use the tailnet's DNS servers. Off leaves this computer's DNS alone."
          checked={useTailnetDns}
          onChange={(next) => run('setPreferences', { useTailnetDns: next })}
        />
      </section>

      <section className="card" aria-labelledby="app-title">
        <h2 id="app-title" className="section-title">
          App
        </h2>
        {app.shell === 'electron' && (
          <Switch
            label="Launch at login"
            checked={prefs.launchAtLogin}
            onChange={(next) => run('setPreferences', { launchAtLogin: next })}
          />
        )}
        <Switch
          label="Notifications"
          description="Connected, disconnected, and when this device's key is about to expire."
          checked={prefs.notifications}
          onChange={(next) => run('setPreferences', { notifications: next })}
        />
        <fieldset className="segmented">
          <legend className="field-label">Appearance</legend>
          {(['system', 'light', 'dark'] as Theme[]).map((t) => (
            <label key={t} className="segment">
              <input
                type="radio"
                name={themeName}
                value={t}
                checked={prefs.theme === t}
                onChange={() => run('setPreferences', { theme: t })}
              />
              <span>{t === 'system' ? 'System' : t === 'light' ? 'Light' : 'Dark'}</span>
            </label>
          ))}
        </fieldset>
      </section>
      <p className="muted small center">Weft {app.version}</p>
    </section>
  );
}

function ControlUrlField({ value }: { value: string }) {
  const run = useWeft((s) => s.run);
  return (
    <SettingForm
      label="Control server"
      initial={value}
      unchanged={(text) => text.trim() === value}
      type="url"
      inputClass="text-input"
      save={(text) => {
        const r = ControlUrl.safeParse(text);
        if (!r.success) return r.error.issues[0]?.message ?? 'Invalid address';
        void run('setPreferences', { controlUrl: r.data });
        return null;
      }}
    />
  );
}

function RoutesField({ routes }: { routes: string[] }) {
  const run = useWeft((s) => s.run);
  const initial = routes.join(', ');
  return (
    <SettingForm
      label="Advertise routes"
      initial={initial}
      unchanged={(text) => text === initial}
      inputClass="text-input mono"
      placeholder="198.51.100.0/24"
      hint="Subnets behind this device that others may reach, separated by commas."
      save={(text) => {
        const r = parseRoutesText(text);
        if ('error' in r) return r.error;
        void run('setPreferences', { advertiseRoutes: r.routes });
        return null;
      }}
    />
  );
}

/**
 * A one-line setting with its own Save button, off while the text is unchanged. On submit `save`
 * stores the text, or says why it cannot; the reason stands under the field (in place of the hint).
 */
function SettingForm(props: {
  label: string;
  initial: string;
  unchanged: (text: string) => boolean;
  save: (text: string) => string | null;
  inputClass: string;
  type?: 'url';
  placeholder?: string;
  hint?: string;
}) {
  const [text, setText] = useState(props.initial);
  const [error, setError] = useState<string | null>(null);
  const id = useId();
  const errId = useId();
  const hintId = useId();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setError(props.save(text));
  };
  return (
    <form className="form" onSubmit={submit} noValidate>
      <label htmlFor={id} className="field-label">
        {props.label}
      </label>
      <div className="input-row">
        <input
          id={id}
          className={props.inputClass}
          type={props.type}
          value={text}
          placeholder={props.placeholder}
          spellCheck={false}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? errId : props.hint ? hintId : undefined}
          onChange={(e) => setText(e.target.value)}
        />
        <button type="submit" className="button" disabled={props.unchanged(text)}>
          Save
        </button>
      </div>
      {error ? (
        <p id={errId} className="field-error" role="alert">
          {error}
        </p>
      ) : (
        props.hint && (
          <p id={hintId} className="muted small">
            {props.hint}
          </p>
        )
      )}
    </form>
  );
}
