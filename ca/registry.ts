/**
 * Node entries and join tokens: who may get which identities. A node entry binds a node name to
 * the SPIFFE IDs it is assigned (SPIRE's registration entries, keyed by node). Tokens are stored
 * only as SHA-256 hashes, expire, and are single-use: redeeming binds the token to the public key
 * of the request, and a retry with that same key (a lost response) is allowed until expiry.
 */
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { JsonFile } from './json-file';
import { NodeNotFoundError, denied, invalid, unauthenticated } from './errors';

/** A node and the identities it may hold. */
export interface NodeEntry {
  readonly name: string;
  readonly spiffeIds: readonly string[];
  readonly createdAt: string;
  readonly updatedAt: string;
  /** The last time the node got a certificate, and how it proved itself. */
  readonly lastIssuedAt?: string;
  readonly lastAttestation?: Attestation;
}

export type Attestation = 'token' | 'certificate' | 'bootstrap';

/** A join token as stored: never the secret, only its hash. */
export interface TokenRecord {
  readonly id: string;
  readonly hash: string;
  readonly node: string;
  readonly spiffeIds: readonly string[];
  readonly createdAt: string;
  readonly expiresAt: string;
  readonly usedAt?: string;
  /** SHA-256 of the SubjectPublicKeyInfo it was redeemed with. */
  readonly usedByKey?: string;
}

/** A token as shown to admins (no hash). */
export type TokenInfo = Omit<TokenRecord, 'hash'>;

const NODE_NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** True when `name` can be a node name (a DNS-style name: it becomes a certificate CN). */
export function isValidNodeName(name: string): boolean {
  return NODE_NAME_RE.test(name);
}

const sha256 = (s: string | Buffer) => crypto.createHash('sha256').update(s).digest('hex');

/** Tokens look like `<16 hex id>.<43 base64url secret>`; the id is safe to log. */
export function parseToken(token: string): { id: string; secret: string } | undefined {
  const m = /^([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/.exec(token.trim());
  return m ? { id: m[1] as string, secret: m[2] as string } : undefined;
}

/** How long a used or expired token record is kept (so "already used" can be told apart). */
const TOKEN_RETENTION_MS = 7 * 24 * 3600_000;

/** The registry: in memory, persisted to `DATA_DIR/ca/{nodes,tokens}.json`. */
export class Registry {
  private nodes = new Map<string, NodeEntry>();
  /** False until load(): a failed start must never write an empty registry over the real one. */
  private loaded = false;
  private tokens = new Map<string, TokenRecord>();
  private readonly nodeFile: JsonFile<{ nodes: NodeEntry[] }>;
  private readonly tokenFile: JsonFile<{ tokens: TokenRecord[] }>;

  constructor(
    dir: string,
    private readonly now: () => number,
  ) {
    this.nodeFile = new JsonFile(path.join(dir, 'nodes.json'), () => ({ nodes: [] }));
    this.tokenFile = new JsonFile(path.join(dir, 'tokens.json'), () => ({ tokens: [] }));
  }

  async load(): Promise<void> {
    const [n, t] = await Promise.all([this.nodeFile.read(), this.tokenFile.read()]);
    this.nodes = new Map(n.nodes.map(e => [e.name, e]));
    const cutoff = this.now() - TOKEN_RETENTION_MS;
    this.loaded = true;
    this.tokens = new Map(
      t.tokens.filter(r => Date.parse(r.expiresAt) > cutoff).map(r => [r.id, r]),
    );
  }

  private saveNodes(): Promise<void> {
    if (!this.loaded) return Promise.resolve();
    return this.nodeFile.write({ nodes: [...this.nodes.values()] });
  }

  private saveTokens(): Promise<void> {
    if (!this.loaded) return Promise.resolve();
    return this.tokenFile.write({ tokens: [...this.tokens.values()] });
  }

  getNode(name: string): NodeEntry | undefined {
    return this.nodes.get(name);
  }

  listNodes(): NodeEntry[] {
    return [...this.nodes.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Creates or replaces the identities of a node. */
  async upsertNode(name: string, spiffeIds: readonly string[]): Promise<NodeEntry> {
    if (!isValidNodeName(name))
      throw invalid(
        'CA_NODE_UNKNOWN',
        `invalid node name ${JSON.stringify(name)}: lowercase letters, digits, '-' and '.'`,
      );
    if (spiffeIds.length === 0)
      throw invalid('CA_NODE_UNKNOWN', 'a node needs at least one service account');
    const ts = new Date(this.now()).toISOString();
    const prev = this.nodes.get(name);
    const entry: NodeEntry = {
      ...prev,
      name,
      spiffeIds: [...new Set(spiffeIds)],
      createdAt: prev?.createdAt ?? ts,
      updatedAt: ts,
    };
    this.nodes.set(name, entry);
    await this.saveNodes();
    return entry;
  }

  /**
   * Removes a node: its certificates can no longer be renewed and its tokens stop working.
   * @throws NodeNotFoundError
   */
  async removeNode(name: string): Promise<void> {
    if (!this.nodes.delete(name)) throw new NodeNotFoundError(name);
    for (const [id, t] of this.tokens) if (t.node === name) this.tokens.delete(id);
    await Promise.all([this.saveNodes(), this.saveTokens()]);
  }

  /** Records a successful issuance (in memory; persisted with the next write). */
  noteIssued(name: string, how: Attestation): void {
    const e = this.nodes.get(name);
    if (e)
      this.nodes.set(name, {
        ...e,
        lastIssuedAt: new Date(this.now()).toISOString(),
        lastAttestation: how,
      });
  }

  /** Creates a join token for a node (creating or updating the node entry); returns the secret once. */
  async createToken(
    node: string,
    spiffeIds: readonly string[],
    ttlMs: number,
  ): Promise<{ token: string; info: TokenInfo }> {
    await this.upsertNode(node, spiffeIds);
    const id = crypto.randomBytes(8).toString('hex');
    const secret = crypto.randomBytes(32).toString('base64url');
    const now = this.now();
    const rec: TokenRecord = {
      id,
      hash: sha256(secret),
      node,
      spiffeIds: [...spiffeIds],
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + ttlMs).toISOString(),
    };
    this.tokens.set(id, rec);
    await this.saveTokens();
    const { hash: _hash, ...info } = rec;
    return { token: `${id}.${secret}`, info };
  }

  listTokens(): TokenInfo[] {
    return [...this.tokens.values()].map(({ hash: _hash, ...info }) => info);
  }

  /**
   * Checks a token without using it up.
   * @throws NotAuthenticatedError for an unknown, malformed or expired token; NotAuthorizedError
   *   for one already redeemed with a different key
   */
  checkToken(token: string, spkiHash: string): TokenRecord {
    const parsed = parseToken(token);
    if (!parsed) throw unauthenticated('CA_TOKEN_INVALID', 'join token is malformed');
    const rec = this.tokens.get(parsed.id);
    const hash = Buffer.from(sha256(parsed.secret), 'hex');
    if (!rec || !crypto.timingSafeEqual(hash, Buffer.from(rec.hash, 'hex'))) {
      throw unauthenticated('CA_TOKEN_INVALID', `join token ${parsed.id} is not known to this CA`);
    }
    if (Date.parse(rec.expiresAt) <= this.now()) {
      throw unauthenticated(
        'CA_TOKEN_EXPIRED',
        `join token ${rec.id} expired at ${rec.expiresAt}; create a new one with 'sail token create'`,
      );
    }
    if (rec.usedByKey !== undefined && rec.usedByKey !== spkiHash) {
      throw denied(
        'CA_TOKEN_USED',
        `join token ${rec.id} was already used at ${String(rec.usedAt)}; tokens are single-use`,
      );
    }
    if (!this.nodes.has(rec.node))
      throw denied('CA_NODE_UNKNOWN', `node ${rec.node} of join token ${rec.id} was removed`);
    return rec;
  }

  /** Marks a token used by the key with hash `spkiHash`, persisting before the CA answers. */
  async redeemToken(id: string, spkiHash: string): Promise<void> {
    const rec = this.tokens.get(id);
    if (!rec || rec.usedByKey === spkiHash) return;
    this.tokens.set(id, {
      ...rec,
      usedAt: new Date(this.now()).toISOString(),
      usedByKey: spkiHash,
    });
    await this.saveTokens();
  }

  /** Active (unexpired, unused) tokens, for the metrics gauge. */
  activeTokenCount(): number {
    const now = this.now();
    let n = 0;
    for (const t of this.tokens.values()) if (!t.usedByKey && Date.parse(t.expiresAt) > now) n++;
    return n;
  }

  /** Persists node bookkeeping (last issued) now and then, not on every renewal. */
  flush(): Promise<void> {
    return this.saveNodes();
  }
}

/** SHA-256 hex of a SubjectPublicKeyInfo, the key a token gets bound to. */
export function spkiHash(spki: Buffer): string {
  return sha256(spki);
}
