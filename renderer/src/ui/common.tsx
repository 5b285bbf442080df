import { type ReactNode, useEffect, useId, useRef } from 'react';
import { useWeft } from '../store/store.js';
import { CopyIcon, SearchIcon } from './icons.js';

/** A heading that takes focus when its screen appears, so keyboard and screen-reader users land on it. */
export function ScreenHeading({ children, id }: { children: ReactNode; id?: string }) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    ref.current?.focus();
  }, []);
  return (
    <h1 className="screen-title" ref={ref} tabIndex={-1} id={id}>
      {children}
    </h1>
  );
}

/** A button showing only an icon: named (and its tooltip) by `label`. */
export function IconButton(props: { label: string; onClick: () => void; children: ReactNode }) {
  return (
    <button
      type="button"
      className="icon-button"
      aria-label={props.label}
      title={props.label}
      onClick={props.onClick}
    >
      {props.children}
    </button>
  );
}

export function CopyButton({ text, label }: { text: string; label: string }) {
  const run = useWeft((s) => s.run);
  const dispatch = useWeft((s) => s.dispatch);
  const copy = async () => {
    if (await run('copyText', { text }))
      dispatch({ type: 'toast', level: 'info', message: `Copied ${text}` });
  };
  return (
    <IconButton label={label} onClick={copy}>
      <CopyIcon />
    </IconButton>
  );
}

/** An on/off control: a button with role=switch, named by its visible label. */
export function Switch(props: {
  label: string;
  checked: boolean;
  onChange: (next: boolean) => void;
  disabled?: boolean;
  description?: string;
}) {
  const labelId = useId();
  const descId = useId();
  return (
    <div className="switch-row">
      <span className="switch-text">
        <span id={labelId} className="switch-label">
          {props.label}
        </span>
        {props.description && (
          <span id={descId} className="muted small">
            {props.description}
          </span>
        )}
      </span>
      <button
        type="button"
        role="switch"
        className="switch"
        aria-checked={props.checked}
        aria-labelledby={labelId}
        aria-describedby={props.description ? descId : undefined}
        disabled={props.disabled}
        onClick={() => props.onChange(!props.checked)}
      >
        <span className="switch-knob" />
      </button>
    </div>
  );
}

/** A search field over a list; `label` names it for screen readers and stands in it as the placeholder. */
export function SearchBox(props: { label: string; value: string; onChange: (query: string) => void }) {
  const id = useId();
  return (
    <div className="search">
      <label htmlFor={id} className="sr-only">
        {props.label}
      </label>
      <SearchIcon />
      <input
        id={id}
        type="search"
        className="text-input"
        placeholder={props.label}
        value={props.value}
        onChange={(e) => props.onChange(e.target.value)}
      />
    </div>
  );
}

export function Toasts() {
  const toasts = useWeft((s) => s.ui.toasts);
  const dispatch = useWeft((s) => s.dispatch);
  useEffect(() => {
    if (toasts.length === 0) return;
    const first = toasts[0];
    if (!first) return;
    const t = setTimeout(
      () => dispatch({ type: 'dismissToast', id: first.id }),
      first.level === 'error' ? 6000 : 2500,
    );
    return () => clearTimeout(t);
  }, [toasts, dispatch]);
  return (
    <div className="toasts" role="status" aria-live="polite">
      {toasts.map((t) => (
        <div key={t.id} className={`toast toast-${t.level}`}>
          <span>{t.message}</span>
          <button
            type="button"
            className="link-button"
            aria-label={`Dismiss: ${t.message}`}
            onClick={() => dispatch({ type: 'dismissToast', id: t.id })}
          >
            ×
          </button>
        </div>
      ))}
    </div>
  );
}
