// The tailnet's records as the rest of control sees them, independent of how a database stores them.

export interface UserRecord {
  id: string;
  /** Login name, unique. */
  name: string;
  email: string | null;
  createdAt: string;
  /** Who vouches for the user: an OIDC issuer URL or `github`; null for users made by an admin. */
  provider: string | null;
  subject: string | null;
  displayName: string | null;
  /** Group names from the identity provider's groups claim at the last sign-in, as sent. */
  groups: string[];
}

export interface PreauthKeyRecord {
  id: string;
  keyHash: string;
  userId: string;
  reusable: boolean;
  ephemeral: boolean;
  tags: string[];
  expiresAt: string | null;
  usedCount: number;
  createdAt: string;
}

export interface NodeRecord {
  id: string;
  name: string;
  hostname: string;
  userId: string | null;
  /** The owner's login name, joined in for views. */
  userName: string | null;
  /** The owner's email, joined in for policy (which names users by email). */
  userEmail: string | null;
  /** The owner's identity-provider groups, joined in for policy. */
  userGroups: string[];
  preauthKeyId: string | null;
  tags: string[];
  machineKey: string;
  nodeKey: string;
  ipv4: string;
  ipv6: string;
  endpoints: string[];
  os: string;
  /** Removed automatically once it has been offline for a while (CI jobs, containers). */
  ephemeral: boolean;
  createdAt: string;
  lastSeen: string | null;
  keyExpiry: string | null;
  advertisedRoutes: string[];
  approvedRoutes: string[];
  kind: NodeKind;
  /** The client's reported version; null until it says. */
  clientVersion: string | null;
  /** Tailscale clients' disco key (base64); null for Weft nodes. */
  discoKey: string | null;
  /** Tailscale clients' home relay (DERP) region; null when unknown. */
  homeRelay: number | null;
  /** The replica holding the node's stream, as the database says (null: offline); absent in records not read from it. */
  streamedBy?: string | null;
}

/** Which client a node runs: Weft's engine, or an official Tailscale client speaking ts2021. */
export type NodeKind = 'weft' | 'tailscale';

/** Fields a new node may leave out: a Weft node unless said otherwise, nothing reported yet. */
export type NewNode = Omit<
  NodeRecord,
  'userName' | 'userEmail' | 'userGroups' | 'kind' | 'clientVersion' | 'discoKey' | 'homeRelay'
> &
  Partial<Pick<NodeRecord, 'kind' | 'clientVersion' | 'discoKey' | 'homeRelay'>>;

/** What registration may change on a node without touching its name or addresses. */
export type NodeUpdate = Partial<
  Pick<
    NodeRecord,
    | 'hostname'
    | 'userId'
    | 'preauthKeyId'
    | 'tags'
    | 'nodeKey'
    | 'endpoints'
    | 'os'
    | 'ephemeral'
    | 'lastSeen'
    | 'keyExpiry'
    | 'advertisedRoutes'
    | 'approvedRoutes'
    | 'kind'
    | 'clientVersion'
    | 'discoKey'
    | 'homeRelay'
  >
>;

export interface PendingLoginRecord {
  id: string;
  machineKey: string;
  nodeKey: string;
  hostname: string;
  os: string;
  status: 'pending' | 'authorized' | 'cancelled';
  nodeId: string | null;
  userName: string | null;
  createdAt: string;
  expiresAt: string;
  /** The address the login was asked from. */
  source: string;
}

export interface AuthAttemptRecord {
  state: string;
  loginId: string;
  provider: string;
  nonce: string;
  codeVerifier: string;
  expiresAt: string;
  browserHash: string;
}

export interface LoginConfirmationRecord {
  tokenHash: string;
  loginId: string;
  browserHash: string;
  /** The signed-in Identity as JSON. */
  identity: string;
  expiresAt: string;
}

export interface ApiKeyRecord {
  prefix: string;
  keyHash: string;
  createdAt: string;
  expiresAt: string;
  lastUsedAt: string | null;
}

export interface PolicyRecord {
  version: number;
  /** Exactly as it was set. */
  text: string;
  createdAt: string;
  createdBy: string;
}

export function isExpired(node: Pick<NodeRecord, 'keyExpiry'>, now: Date): boolean {
  return node.keyExpiry !== null && Date.parse(node.keyExpiry) <= now.getTime();
}
