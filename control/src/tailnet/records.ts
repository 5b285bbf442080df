// The tailnet's records as the rest of control sees them, independent of how a database stores them.

export interface UserRecord {
  id: string;
  /** Login name, unique. */
  name: string;
  email: string | null;
  createdAt: string;
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
}

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
  >
>;

export function isExpired(node: Pick<NodeRecord, 'keyExpiry'>, now: Date): boolean {
  return node.keyExpiry !== null && Date.parse(node.keyExpiry) <= now.getTime();
}
