import { type AppState, connectionPhase } from '@weft/protocol';
import { useEffect } from 'react';
import { useWeft } from '../store/store.js';
import { IconButton, ScreenHeading, Toasts } from './common.js';
import { ExitNodes } from './ExitNodes.js';
import { Home } from './Home.js';
import { AlertIcon, BackIcon, GearIcon, LogoMark } from './icons.js';
import { Settings } from './Settings.js';
import { SignIn } from './SignIn.js';

function useTheme(theme: AppState['prefs']['theme'] | undefined) {
  useEffect(() => {
    const root = document.documentElement;
    if (!theme || theme === 'system') delete root.dataset.theme;
    else root.dataset.theme = theme;
  }, [theme]);
}

export function App() {
  const app = useWeft((s) => s.session.app);
  const link = useWeft((s) => s.session.link);
  const bootError = useWeft((s) => s.session.bootError);
  const view = useWeft((s) => s.ui.view);
  const dispatch = useWeft((s) => s.dispatch);
  useTheme(app?.prefs.theme);

  if (!app) {
    return (
      <div className="app">
        <main className="screen center-screen">
          {bootError ? (
            <>
              <ScreenHeading>Cannot reach Weft</ScreenHeading>
              <p className="muted" role="alert">
                {bootError}
              </p>
            </>
          ) : (
            <p role="status" className="muted">
              Starting Weft…
            </p>
          )}
        </main>
      </div>
    );
  }

  const signedIn =
    app.engine !== null && app.engine.backendState !== 'NeedsLogin' && app.engine.self !== null;
  // A sign-in in progress (first or renewing the key) has the screen until it ends.
  const loggingIn = app.login.phase === 'starting' || app.login.phase === 'waiting';
  const screenView = signedIn && !loggingIn ? view : view === 'settings' ? 'settings' : 'main';
  const phase = connectionPhase(app);

  return (
    <div className={`app phase-${phase}`}>
      <header className="topbar">
        {screenView === 'main' ? (
          <span className="brand">
            <LogoMark />
            <span className="brand-name">Weft</span>
          </span>
        ) : (
          <IconButton label="Back" onClick={() => dispatch({ type: 'navigate', view: 'main' })}>
            <BackIcon />
          </IconButton>
        )}
        <span className="spacer" />
        {screenView !== 'settings' && (
          <IconButton label="Settings" onClick={() => dispatch({ type: 'navigate', view: 'settings' })}>
            <GearIcon />
          </IconButton>
        )}
      </header>
      <main className="content">
        {link === 'lost' && (
          <p className="banner banner-warn" role="alert">
            Lost the connection to Weft. Reconnecting…
          </p>
        )}
        <Problems app={app} />
        {screenView === 'settings' ? (
          <Settings app={app} />
        ) : !signedIn || loggingIn ? (
          <SignIn app={app} />
        ) : screenView === 'exit-nodes' ? (
          <ExitNodes app={app} />
        ) : (
          <Home app={app} />
        )}
      </main>
      <Toasts />
    </div>
  );
}

function Problems({ app }: { app: AppState }) {
  const problems: string[] = [];
  if (app.engine === null)
    problems.push(`Weft's engine is not running${app.engineError ? `: ${app.engineError}` : '.'}`);
  const helperSays = app.helper.message ?? 'The network helper is not running';
  if (app.helper.phase === 'failed') problems.push(`${helperSays}. Weft keeps trying to start it.`);
  else if (app.helper.phase === 'restarting') problems.push(`${helperSays}. Restarting it…`);
  if (problems.length === 0) return null;
  return (
    <div className="banner banner-error" role="alert">
      <AlertIcon />
      <div>
        {problems.map((p) => (
          <p key={p}>{p}</p>
        ))}
      </div>
    </div>
  );
}
