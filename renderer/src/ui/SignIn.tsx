import { type AppState, ControlUrl } from '@weft/protocol';
import { type FormEvent, useId, useState } from 'react';
import { useWeft } from '../store/store.js';
import { CopyButton, ScreenHeading } from './common.js';
import { LogoMark } from './icons.js';

export function SignIn({ app }: { app: AppState }) {
  const login = app.login;
  if (login.phase === 'waiting' || login.phase === 'starting') return <Waiting app={app} />;
  return <SignInForm app={app} />;
}

function SignInForm({ app }: { app: AppState }) {
  const run = useWeft((s) => s.run);
  const busy = useWeft((s) => Boolean(s.ui.busy.login));
  const [url, setUrl] = useState(app.prefs.controlUrl || app.engine?.controlUrl || '');
  const [error, setError] = useState<string | null>(null);
  const inputId = useId();
  const errorId = useId();
  const hintId = useId();

  const validate = (value: string): string | null => {
    const r = ControlUrl.safeParse(value);
    return r.success ? null : (r.error.issues[0]?.message ?? 'Invalid address');
  };

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const problem = validate(url);
    setError(problem);
    if (problem) {
      document.getElementById(inputId)?.focus();
      return;
    }
    void run('login', { controlUrl: url.trim() });
  };

  return (
    <section className="screen signin" aria-labelledby="signin-title">
      <div className="hero">
        <LogoMark size={48} />
        <ScreenHeading id="signin-title">Sign in to Weft</ScreenHeading>
        <p className="muted">
          Connect this device to your organisation's network. You sign in with your company account in the
          browser.
        </p>
      </div>
      {login(app)}
      <form className="card form" onSubmit={submit} noValidate>
        <label htmlFor={inputId} className="field-label">
          Control server
        </label>
        <input
          id={inputId}
          className="text-input"
          type="url"
          inputMode="url"
          autoComplete="url"
          spellCheck={false}
          placeholder="https://weft.example.com"
          value={url}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? errorId : hintId}
          onChange={(e) => {
            setUrl(e.target.value);
            if (error) setError(validate(e.target.value));
          }}
        />
        {error ? (
          <p id={errorId} className="field-error" role="alert">
            {error}
          </p>
        ) : (
          <p id={hintId} className="muted small">
            Your administrator gives you this address.
          </p>
        )}
        <button type="submit" className="button primary wide" disabled={busy}>
          Sign in
        </button>
      </form>
    </section>
  );
}

function login(app: AppState) {
  if (app.login.phase !== 'error' || !app.login.error) return null;
  return (
    <p className="banner banner-error" role="alert">
      Sign-in failed: {app.login.error}
    </p>
  );
}

function Waiting({ app }: { app: AppState }) {
  const run = useWeft((s) => s.run);
  const authUrl = app.login.authUrl;
  const linkId = useId();
  return (
    <section className="screen signin" aria-labelledby="waiting-title" aria-busy={authUrl ? undefined : true}>
      <div className="hero">
        <div className="spinner" aria-hidden="true" />
        <ScreenHeading id="waiting-title">Finish signing in in your browser</ScreenHeading>
        <p className="muted">
          {authUrl
            ? app.shell === 'electron'
              ? 'We opened your browser. Sign in there and this window updates by itself.'
              : 'Open the sign-in page, sign in there, and this page updates by itself.'
            : 'Asking the control server for a sign-in link…'}
        </p>
      </div>
      {authUrl && (
        <div className="card form">
          <label className="field-label" htmlFor={linkId}>
            Sign-in link
          </label>
          <div className="input-row">
            <input
              id={linkId}
              className="text-input mono"
              readOnly
              value={authUrl}
              onFocus={(e) => e.target.select()}
            />
            <CopyButton text={authUrl} label="Copy sign-in link" />
          </div>
          <a className="button primary wide" href={authUrl} target="_blank" rel="noopener noreferrer">
            Open sign-in page
          </a>
        </div>
      )}
      <button type="button" className="button wide" onClick={() => run('cancelLogin')}>
        Cancel
      </button>
    </section>
  );
}
