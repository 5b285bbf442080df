// The few HTML pages a person sees on control during a sign-in: a choice of identity provider
// and the result. Self-contained (no scripts, no external assets) and escaped throughout.

const escapeHtml = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string,
  );

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><title>${escapeHtml(title)} · Weft</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;color:#1d232b}
h1{font-size:1.4rem}a.button{display:block;margin:.6rem 0;padding:.7rem 1rem;border:1px solid #c4ccd6;border-radius:.4rem;text-decoration:none;color:inherit}
a.button:hover{background:#f1f4f8}.muted{color:#5b6673}
button{font:inherit;padding:.7rem 1.4rem;border:0;border-radius:.4rem;background:#1d5fd1;color:#fff}
dl{display:grid;grid-template-columns:max-content auto;gap:.3rem 1rem}dt{color:#5b6673}dd{margin:0}</style></head>
<body><main>${body}</main></body></html>`;
}

export function resultPage(outcome: { ok: boolean; title: string; message: string }): string {
  const hint = outcome.ok
    ? '<p class="muted">You can close this window.</p>'
    : '<p class="muted">Nothing was connected. If this keeps happening, ask the administrator of your tailnet.</p>';
  return page(
    outcome.title,
    `<h1>${escapeHtml(outcome.title)}</h1><p>${escapeHtml(outcome.message)}</p>${hint}`,
  );
}

export function choicePage(hostname: string, choices: { label: string; href: string }[]): string {
  const links = choices
    .map((c) => `<a class="button" href="${escapeHtml(c.href)}">${escapeHtml(c.label)}</a>`)
    .join('');
  return page(
    'Sign in',
    `<h1>Connect ${escapeHtml(hostname)}</h1><p>Sign in to connect this device to your tailnet.</p>${links}`,
  );
}

/** "Connect this device to your tailnet?": what asked, from where, and when; Connect is a POST. */
export function confirmPage(args: {
  action: string;
  token: string;
  hostname: string;
  os: string;
  source: string;
  requestedAt: string;
  signedInAs: string;
}): string {
  const rows: [string, string][] = [
    ['Device', args.hostname],
    ['Operating system', args.os || 'unknown'],
    ['Requested from', args.source || 'unknown'],
    // Control's clock in UTC, to the second: the person compares it with when they ran `weft up`.
    ['Requested at', args.requestedAt.replace('T', ' ').replace(/(\.\d+)?Z$/, ' UTC')],
    ['You are', args.signedInAs],
  ];
  const list = rows.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join('');
  return page(
    'Connect this device?',
    `<h1>Connect this device to your tailnet?</h1><dl>${list}</dl>
<p class="muted">Only connect it if you started this sign-in on this device just now. If someone sent you this link, close this page: nothing is connected until you press Connect.</p>
<form action="${escapeHtml(args.action)}" method="post"><input type="hidden" name="token" value="${escapeHtml(args.token)}"><button type="submit">Connect</button></form>`,
  );
}
