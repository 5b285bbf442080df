// A minimal browser for sign-in tests: fetch with a cookie jar per host, following redirects by
// hand so a test can stop at (and tamper with) any hop, and submitting the forms a page shows.

export interface Page {
  url: string;
  status: number;
  body: string;
  location: string | null;
}

export class Browser {
  private readonly jars = new Map<string, Map<string, string>>();

  /** One request; cookies sent and stored as a browser would (per host, ignoring paths). */
  async request(url: string, init: { method?: string; form?: Record<string, string> } = {}): Promise<Page> {
    const target = new URL(url);
    const jar = this.jars.get(target.host) ?? new Map<string, string>();
    this.jars.set(target.host, jar);
    const headers: Record<string, string> = {};
    if (jar.size > 0) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    let body: string | undefined;
    if (init.form) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(init.form).toString();
    }
    const res = await fetch(target, { method: init.method ?? 'GET', headers, body, redirect: 'manual' });
    for (const line of res.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attributes.some((a) => /^\s*max-age=0\s*$/i.test(a)) || value === '';
      if (expired) jar.delete(name);
      else jar.set(name, value);
    }
    const location = res.headers.get('location');
    return {
      url: target.href,
      status: res.status,
      body: await res.text(),
      location: location === null ? null : new URL(location, target).href,
    };
  }

  /** Follows redirects from `url` until a page that is not one, or until `stop` says to. */
  async follow(url: string, stop: (url: string) => boolean = () => false): Promise<Page> {
    let page = await this.request(url);
    for (let hops = 0; page.location !== null && !stop(page.location); hops++) {
      if (hops > 20) throw new Error(`too many redirects from ${url}`);
      page = await this.request(page.location);
    }
    return page;
  }

  /** Submits the first form on `page` with `fields` (plus its hidden inputs); follows the redirects. */
  async submit(page: Page, fields: Record<string, string>, stop?: (url: string) => boolean): Promise<Page> {
    const form = /<form[^>]*action="([^"]+)"[^>]*method="post"[^>]*>([\s\S]*?)<\/form>/i.exec(page.body);
    if (form === null) throw new Error(`no form on ${page.url}: ${page.body.slice(0, 300)}`);
    const hidden: Record<string, string> = {};
    for (const input of (form[2] as string).matchAll(
      /<input type="hidden" name="([^"]+)" value="([^"]*)"/g,
    )) {
      hidden[input[1] as string] = input[2] as string;
    }
    const action = new URL((form[1] as string).replace(/&amp;/g, '&'), page.url).href;
    const next = await this.request(action, { method: 'POST', form: { ...hidden, ...fields } });
    return next.location === null || stop?.(next.location) ? next : this.follow(next.location, stop);
  }
}
