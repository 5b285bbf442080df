import type { Server } from 'node:http';
import Provider from 'oidc-provider';

// A real OpenID Connect provider (oidc-provider, a certified implementation) with its development
// login and consent pages, for signing in through the desktop UI. Anyone may sign in as any
// account id; the claims say who they are.

export const IDP_CLIENT_ID = 'weft-control';
export const IDP_CLIENT_SECRET = 'ui-test-client-secret-0123456789';

export interface Idp {
  issuer: string;
  stop(): Promise<void>;
}

export async function startIdp(host: string, port: number, redirectUri: string): Promise<Idp> {
  const issuer = `http://${host}:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: IDP_CLIENT_ID,
        client_secret: IDP_CLIENT_SECRET,
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'] },
    scopes: ['openid', 'email', 'profile'],
    async findAccount(_ctx: unknown, id: string) {
      return {
        accountId: id,
        claims: async () => ({
          sub: id,
          email: `${id}@example.com`,
          email_verified: true,
          name: `${id[0]?.toUpperCase()}${id.slice(1)} Example`,
          preferred_username: id,
        }),
      };
    },
    cookies: { keys: ['weft-ui-test-cookie-key'] },
  });
  const server: Server = provider.listen(port, host);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  return {
    issuer,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
