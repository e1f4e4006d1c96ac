/**
 * A small, real, in-process CA for agent tests: a grpc-js server on 127.0.0.1 with TLS that
 * implements the CA contract minimally (DESIGN §3.5, the lead's ca/ has the real one): join tokens
 * (single-use, accepted again for the same public key), renewal with the current certificate as
 * the TLS client certificate, bootstrap certificates, sail-error-code trailers. It mints its own
 * root, serving certificate and bootstrap CA per run, like spire's testca.
 *
 * Certificate times come from an injectable clock (a FakeClock in tests); the TLS layer checks
 * client certificates against real time, so tests keep the fake clock within the real validity of
 * any certificate the agent presents.
 */
import * as crypto from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import {
  type CertificateAuthorityHandlers,
  type CreateCertificateRequest__Output,
  type CreateCertificateResponse,
  loadCaProto,
} from '../../api';
import { type Clock, systemClock } from '../../common/clock';
import {
  InvalidInputError,
  NotAuthenticatedError,
  NotAuthorizedError,
  NotReadyError,
  ResourceExhaustedError,
} from '../../common/errors';
import {
  StaticCertificateProvider,
  peerCertificate,
  serverCredentials,
  unaryHandler,
} from '../../common/grpc';
import { silentLogger } from '../../common/logging';
import {
  type Issuer,
  type Name,
  Oid,
  createCertificate,
  encodeName,
  generateKey,
  isSignedBy,
  keyIdentifier,
  parseCertificate,
  parseCsr,
  parsePem,
  privateKeyToPem,
  randomSerial,
  toPem,
} from '../../common/pki';

/** Wide validity for the test CA's own certificates: TLS checks them against real time, tests use fake times. */
const CA_NOT_BEFORE = new Date(Date.UTC(2020, 0, 1));
const CA_NOT_AFTER = new Date(Date.UTC(2080, 0, 1));
const MIN_TTL_MS = 10_000;
const DEFAULT_TTL_MS = 24 * 3600_000;

/** One request the test CA answered, for assertions. */
export interface TestCaCall {
  readonly method: 'CreateCertificate' | 'GetTrustBundle';
  /** How the caller authenticated (CreateCertificate only). */
  readonly attestation?: 'certificate' | 'bootstrap' | 'token';
  readonly node?: string;
  /** SHA-256 hex of the CSR's public key (CreateCertificate only). */
  readonly keyHash?: string;
  /** gRPC status sent back (0 = OK). */
  readonly code: grpc.status;
  /** The `sail-error-code` sent with a failure. */
  readonly caCode?: string;
}

interface TokenRecord {
  readonly node: string;
  readonly expiresAtMs: number;
  usedByKeyHash?: string;
}

/** A self-signed CA key and certificate. */
interface SigningCa {
  readonly key: crypto.KeyObject;
  readonly pem: string;
  readonly der: Buffer;
  readonly issuer: Issuer;
}

async function makeSigningCa(subject: Name): Promise<SigningCa> {
  const key = await generateKey('ec-p256');
  const spki = crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
  const subjectDer = encodeName(subject);
  const issuer: Issuer = { key, subjectDer, keyId: keyIdentifier(spki) };
  const der = createCertificate(
    {
      serial: randomSerial(),
      subject,
      publicKeySpki: spki,
      notBefore: CA_NOT_BEFORE,
      notAfter: CA_NOT_AFTER,
      isCa: true,
      pathLength: 1,
    },
    issuer,
  );
  return { key, pem: toPem('CERTIFICATE', der), der, issuer };
}

function spkiOf(key: crypto.KeyObject): Buffer {
  return crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
}

function commonName(der: Buffer): string | undefined {
  return parseCertificate(der).subject.find(([oid]) => oid === Oid.commonName)?.[1];
}

/** Options of {@link TestCa.create}. */
export interface TestCaOptions {
  readonly trustDomain?: string;
  /** Issuing time of workload certificates. Default: the system clock. */
  readonly clock?: Clock;
  /** Longest certificate issued. Default 90 days. */
  readonly maxTtlMs?: number;
}

export class TestCa {
  readonly trustDomain: string;
  /** The SPIFFE ID of the serving certificate (what the agent expects). */
  readonly serverSpiffeId: string;
  /** Every call answered, oldest first. */
  readonly calls: TestCaCall[] = [];
  private readonly clock: Clock;
  private readonly maxTtlMs: number;
  private readonly nodes = new Map<string, string[]>();
  private readonly tokens = new Map<string, TokenRecord>();
  private readonly failures: { method: string; err: Error }[] = [];
  private answersToLose = 0;
  private readonly provider: StaticCertificateProvider;
  private server: grpc.Server | undefined;
  private boundPort = 0;

  private constructor(
    opts: TestCaOptions,
    private readonly root: SigningCa,
    private readonly bootstrapCa: SigningCa,
    servingChainPem: string,
    servingKeyPem: string,
  ) {
    this.trustDomain = opts.trustDomain ?? 'cluster.local';
    this.serverSpiffeId = `spiffe://${this.trustDomain}/ns/sail-system/sa/sail-control-plane`;
    this.clock = opts.clock ?? systemClock;
    this.maxTtlMs = opts.maxTtlMs ?? 90 * 24 * 3600_000;
    // Client certificates are checked by TLS against both the mesh root (renewal) and the bootstrap CA.
    this.provider = new StaticCertificateProvider(
      root.pem + bootstrapCa.pem,
      servingChainPem,
      servingKeyPem,
    );
  }

  /** Mints the root, the serving certificate and a bootstrap CA. Starts nothing. */
  static async create(opts: TestCaOptions = {}): Promise<TestCa> {
    const td = opts.trustDomain ?? 'cluster.local';
    const root = await makeSigningCa([
      [Oid.organization, td],
      [Oid.commonName, 'Test Root CA'],
    ]);
    const bootstrap = await makeSigningCa([[Oid.commonName, 'Test Bootstrap CA']]);
    const servingKey = await generateKey('ec-p256');
    const serving = createCertificate(
      {
        serial: randomSerial(),
        subject: [[Oid.organization, td]],
        publicKeySpki: spkiOf(servingKey),
        notBefore: CA_NOT_BEFORE,
        notAfter: CA_NOT_AFTER,
        isCa: false,
        sans: {
          uris: [`spiffe://${td}/ns/sail-system/sa/sail-control-plane`],
          dnsNames: ['localhost'],
          ips: ['127.0.0.1'],
        },
      },
      root.issuer,
    );
    return new TestCa(
      opts,
      root,
      bootstrap,
      toPem('CERTIFICATE', serving) + root.pem,
      privateKeyToPem(servingKey),
    );
  }

  /** The root certificate, PEM (what `sail join` writes to root-cert.pem). */
  get rootPem(): string {
    return this.root.pem;
  }

  /** The root certificate, DER. */
  get rootDer(): Buffer {
    return this.root.der;
  }

  /** `127.0.0.1:PORT`, once started. */
  get address(): string {
    return `127.0.0.1:${this.boundPort}`;
  }

  /** Registers `node` with the SPIFFE IDs it may hold (the first is its default). */
  assign(node: string, ...spiffeIds: string[]): void {
    this.nodes.set(node, spiffeIds);
  }

  /** Unregisters a node: its certificates are refused from then on. */
  removeNode(node: string): void {
    this.nodes.delete(node);
  }

  /** A single-use join token for `node`, valid for `ttlMs` of the CA clock. */
  createToken(node: string, ttlMs = 3600_000): string {
    const token = crypto.randomBytes(24).toString('base64url');
    this.tokens.set(token, { node, expiresAtMs: this.clock.now() + ttlMs });
    return token;
  }

  /**
   * Makes the next call of `method` fail with `err` (a SailError maps to its status and code).
   * CreateCertificate fails after authenticating the caller, before any authorization.
   */
  failNext(err: Error, method: 'CreateCertificate' | 'GetTrustBundle' = 'CreateCertificate'): void {
    this.failures.push({ method, err });
  }

  /**
   * Makes the next successful CreateCertificate do all its work (a token is marked used) but answer
   * UNAVAILABLE, as when the connection drops before the answer arrives.
   */
  loseNextAnswer(): void {
    this.answersToLose++;
  }

  /** A bootstrap certificate for `node` (CN = node) signed by the bootstrap CA. */
  async issueBootstrapCert(
    node: string,
    validity?: { notBefore: Date; notAfter: Date },
  ): Promise<{ certPem: string; keyPem: string }> {
    const key = await generateKey('ec-p256');
    const der = createCertificate(
      {
        serial: randomSerial(),
        subject: [[Oid.commonName, node]],
        publicKeySpki: spkiOf(key),
        notBefore: validity?.notBefore ?? CA_NOT_BEFORE,
        notAfter: validity?.notAfter ?? CA_NOT_AFTER,
        isCa: false,
      },
      this.bootstrapCa.issuer,
    );
    return { certPem: toPem('CERTIFICATE', der), keyPem: privateKeyToPem(key) };
  }

  /**
   * Signs a workload certificate directly (no gRPC), for tests of stored certificates.
   * `signer: 'other'` signs with a throwaway CA the mesh does not trust.
   */
  async issueWorkloadCert(opts: {
    node: string;
    spiffeId: string;
    notBeforeMs: number;
    notAfterMs: number;
    key?: crypto.KeyObject;
    signer?: 'root' | 'other';
  }): Promise<{ certChainPem: string; keyPem: string; key: crypto.KeyObject }> {
    const key = opts.key ?? (await generateKey('ec-p256'));
    const issuer =
      opts.signer === 'other'
        ? (await makeSigningCa([[Oid.commonName, 'Untrusted CA']])).issuer
        : this.root.issuer;
    const der = this.signLeaf(
      spkiOf(key),
      opts.node,
      opts.spiffeId,
      new Date(opts.notBeforeMs),
      new Date(opts.notAfterMs),
      issuer,
    );
    return {
      certChainPem: toPem('CERTIFICATE', der) + this.root.pem,
      keyPem: privateKeyToPem(key),
      key,
    };
  }

  /** Starts serving on `port` (default: the port of the previous start, else a free one). Returns the address. */
  async start(port = this.boundPort): Promise<string> {
    if (this.server) throw new Error('test CA already started');
    const server = new grpc.Server();
    server.addService(loadCaProto().sail.ca.v1.CertificateAuthority.service, this.handlers());
    const creds = serverCredentials(this.provider, false);
    this.boundPort = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`127.0.0.1:${port}`, creds, (err, p) => (err ? reject(err) : resolve(p)));
    });
    this.server = server;
    return this.address;
  }

  /** Stops serving at once (connections are cut, as when a CA process dies). Idempotent. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.forceShutdown();
    await new Promise<void>(resolve => server.tryShutdown(() => resolve()));
  }

  private signLeaf(
    spki: Buffer,
    node: string,
    spiffeId: string,
    notBefore: Date,
    notAfter: Date,
    issuer: Issuer = this.root.issuer,
  ): Buffer {
    return createCertificate(
      {
        serial: randomSerial(),
        subject: [
          [Oid.organization, this.trustDomain],
          [Oid.commonName, node],
        ],
        publicKeySpki: spki,
        notBefore,
        notAfter,
        isCa: false,
        sans: { uris: [spiffeId] },
      },
      issuer,
    );
  }

  private takeFailure(method: string): Error | undefined {
    const i = this.failures.findIndex(f => f.method === method);
    if (i < 0) return undefined;
    return this.failures.splice(i, 1)[0]?.err;
  }

  private handlers(): CertificateAuthorityHandlers {
    const log = silentLogger();
    const record = (call: Omit<TestCaCall, 'code' | 'caCode'>, err?: unknown) => {
      const code = err === undefined ? grpc.status.OK : errStatus(err);
      const caCode = (err as { code?: unknown } | undefined)?.code;
      this.calls.push({ ...call, code, ...(typeof caCode === 'string' ? { caCode } : {}) });
    };
    return {
      CreateCertificate: unaryHandler(log, 'CreateCertificate', async call => {
        const partial: {
          attestation?: TestCaCall['attestation'];
          node?: string;
          keyHash?: string;
        } = {};
        try {
          const res = this.createCertificate(call, partial);
          record({ method: 'CreateCertificate', ...partial });
          return res;
        } catch (err) {
          record({ method: 'CreateCertificate', ...partial }, err);
          throw err;
        }
      }),
      GetTrustBundle: unaryHandler(log, 'GetTrustBundle', async () => {
        const failure = this.takeFailure('GetTrustBundle');
        record({ method: 'GetTrustBundle' }, failure);
        if (failure) throw failure;
        return { rootCerts: [this.root.pem], trustDomain: this.trustDomain };
      }),
    };
  }

  private createCertificate(
    call: grpc.ServerUnaryCall<CreateCertificateRequest__Output, CreateCertificateResponse>,
    out: { attestation?: TestCaCall['attestation']; node?: string; keyHash?: string },
  ): CreateCertificateResponse {
    const req = call.request;
    const block = parsePem(req.csr).find(b => b.label === 'CERTIFICATE REQUEST');
    if (!block)
      throw new InvalidInputError('csr holds no CERTIFICATE REQUEST', { code: 'CA_CSR_INVALID' });
    let csr;
    try {
      csr = parseCsr(block.der);
    } catch (err) {
      throw new InvalidInputError((err as Error).message, { code: 'CA_CSR_INVALID' });
    }
    const keyHash = crypto.createHash('sha256').update(csr.publicKeySpki).digest('hex');
    out.keyHash = keyHash;
    const peer = peerCertificate(call);
    let node: string | undefined;
    let token: TokenRecord | undefined;
    if (peer) {
      // TLS has verified the chain against root + bootstrap CA; which one signed decides the kind.
      node = commonName(peer);
      if (isSignedBy(peer, crypto.createPublicKey(this.root.key))) out.attestation = 'certificate';
      else if (isSignedBy(peer, crypto.createPublicKey(this.bootstrapCa.key)))
        out.attestation = 'bootstrap';
      else
        throw new NotAuthenticatedError('client certificate is not from a trusted CA', {
          code: 'CA_CERT_UNTRUSTED',
        });
      if (!node)
        throw new NotAuthenticatedError('client certificate names no node', {
          code: 'CA_CERT_UNTRUSTED',
        });
    } else {
      const m = /^Bearer\s+(\S+)$/i.exec(String(call.metadata.get('authorization')[0] ?? ''));
      if (!m)
        throw new NotAuthenticatedError('no client certificate and no join token', {
          code: 'CA_NO_CREDENTIALS',
        });
      token = this.tokens.get(m[1] as string);
      if (!token)
        throw new NotAuthenticatedError('unknown join token', { code: 'CA_TOKEN_INVALID' });
      if (this.clock.now() >= token.expiresAtMs)
        throw new NotAuthenticatedError('join token expired', { code: 'CA_TOKEN_EXPIRED' });
      if (token.usedByKeyHash !== undefined && token.usedByKeyHash !== keyHash) {
        throw new NotAuthorizedError('join token already used', { code: 'CA_TOKEN_USED' });
      }
      out.attestation = 'token';
      node = token.node;
    }
    out.node = node;
    // Injected failures come after authentication, so the call record says who was refused.
    const failure = this.takeFailure('CreateCertificate');
    if (failure) throw failure;
    if (req.node && req.node !== node)
      throw new NotAuthorizedError(`request names node ${req.node}, credentials are for ${node}`, {
        code: 'CA_NODE_MISMATCH',
      });
    const ids = this.nodes.get(node);
    if (!ids)
      throw new NotAuthorizedError(`node ${node} is not registered`, { code: 'CA_NODE_UNKNOWN' });
    const spiffeId = req.spiffeId || csr.uris[0] || ids[0];
    if (!spiffeId || !ids.includes(spiffeId))
      throw new NotAuthorizedError(`node ${node} may not have ${spiffeId}`, {
        code: 'CA_IDENTITY_DENIED',
      });
    if (token) token.usedByKeyHash = keyHash;
    const asked = Number(req.validitySeconds) * 1000;
    const ttl = Math.min(this.maxTtlMs, asked > 0 ? Math.max(MIN_TTL_MS, asked) : DEFAULT_TTL_MS);
    const now = this.clock.now();
    const backdate = Math.min(60_000, ttl / 10);
    const der = this.signLeaf(
      csr.publicKeySpki,
      node,
      spiffeId,
      new Date(now - backdate),
      new Date(now + ttl),
    );
    if (this.answersToLose > 0) {
      this.answersToLose--;
      throw new NotReadyError('connection lost before the answer', { code: 'TEST_ANSWER_LOST' });
    }
    return { certChain: [toPem('CERTIFICATE', der), this.root.pem], spiffeId, node };
  }
}

function errStatus(err: unknown): grpc.status {
  if (err instanceof InvalidInputError) return grpc.status.INVALID_ARGUMENT;
  if (err instanceof NotAuthenticatedError) return grpc.status.UNAUTHENTICATED;
  if (err instanceof NotAuthorizedError) return grpc.status.PERMISSION_DENIED;
  if (err instanceof NotReadyError) return grpc.status.UNAVAILABLE;
  if (err instanceof ResourceExhaustedError) return grpc.status.RESOURCE_EXHAUSTED;
  return grpc.status.INTERNAL;
}
