/**
 * Who is calling (authentication) and which identity they may have (authorization). A node gets
 * only the SPIFFE IDs assigned to it; the request's own SANs only select among those.
 */
import * as crypto from 'node:crypto';
import { type ParsedCertificate, parseCertificate, isSignedBy, parseSpiffeId } from '../common/pki';
import { denied, invalid, unauthenticated } from './errors';
import { nodeNameOf } from './issuer';
import type { Attestation, NodeEntry, Registry } from './registry';

/** An authenticated caller. */
export interface Caller {
  readonly node: string;
  readonly attestation: Attestation;
  /** Set for token attestation: the token to mark used once the certificate is issued. */
  readonly tokenId?: string;
}

/** A CA that may vouch for nodes with bootstrap certificates. */
export interface BootstrapCa {
  readonly file: string;
  readonly cert: ParsedCertificate;
  readonly publicKey: crypto.KeyObject;
}

/** Loads bootstrap CA certificates from PEM. */
export function toBootstrapCa(file: string, der: Buffer): BootstrapCa {
  const cert = parseCertificate(der);
  return {
    file,
    cert,
    publicKey: crypto.createPublicKey({ key: cert.publicKeySpki, format: 'der', type: 'spki' }),
  };
}

/** Reads `authorization: Bearer <token>`; undefined when absent. */
export function bearerToken(values: readonly unknown[]): string | undefined {
  const v = values[0];
  if (typeof v !== 'string') return undefined;
  const m = /^Bearer\s+(\S+)$/i.exec(v.trim());
  return m ? m[1] : undefined;
}

/** How many peer certificates' verdicts are remembered (a fleet's worth of renewals). */
const PEER_CACHE_SIZE = 16_384;

export class Authenticator {
  /**
   * Which node a peer certificate proves, by certificate fingerprint. A verdict depends only on
   * the certificate's bytes and the CA's fixed signing and bootstrap keys, so it can be reused;
   * validity is re-checked by TLS on every connection and node removal on every request.
   * Verifying the signature costs more than signing (profiled: 12 % of a renewal).
   */
  private readonly peerCache = new Map<
    string,
    { node: string; attestation: Attestation } | Error
  >();

  constructor(
    private readonly registry: Registry,
    private readonly signingKey: () => crypto.KeyObject,
    private readonly bootstrapCas: readonly BootstrapCa[],
  ) {}

  /** Like identifyPeer, remembering the verdict under the certificate's fingerprint. */
  private identifyPeerCached(
    fingerprint: string,
    der: Buffer,
  ): { node: string; attestation: Attestation } | Error {
    let verdict = this.peerCache.get(fingerprint);
    if (verdict === undefined) {
      verdict = this.identifyPeer(der);
      if (this.peerCache.size >= PEER_CACHE_SIZE)
        this.peerCache.delete(this.peerCache.keys().next().value as string);
      this.peerCache.set(fingerprint, verdict);
    }
    return verdict;
  }

  /** Which node a TLS-verified peer certificate names, and how; an Error when it proves nothing. */
  private identifyPeer(peerCertDer: Buffer): { node: string; attestation: Attestation } | Error {
    const cert = parseCertificate(peerCertDer);
    const node = nodeNameOf(cert);
    if (isSignedBy(peerCertDer, this.signingKey())) {
      return node
        ? { node, attestation: 'certificate' }
        : unauthenticated('CA_CERT_UNTRUSTED', 'client certificate names no node');
    }
    const bootstrap = this.bootstrapCas.find(b => isSignedBy(peerCertDer, b.publicKey));
    if (bootstrap) {
      return node
        ? { node, attestation: 'bootstrap' }
        : unauthenticated(
            'CA_CERT_UNTRUSTED',
            `bootstrap certificate from ${bootstrap.file} names no node (set its CN)`,
          );
    }
    return unauthenticated(
      'CA_CERT_UNTRUSTED',
      'client certificate is not signed by this CA or a bootstrap CA',
    );
  }

  /**
   * Authenticates a caller by, in order: a Sail certificate (renewal), a bootstrap certificate,
   * a join token. The TLS layer has already verified any peer certificate's chain and validity
   * against the mesh roots plus the bootstrap CAs.
   * @throws NotAuthenticatedError or NotAuthorizedError saying why
   */
  authenticate(
    peer: { der: Buffer; fingerprint: string } | undefined,
    token: string | undefined,
    keyHash: string,
  ): Caller {
    if (peer) {
      const verdict = this.identifyPeerCached(peer.fingerprint, peer.der);
      if (!(verdict instanceof Error)) {
        this.requireNode(verdict.node, verdict.attestation);
        return verdict;
      }
      // A certificate from a root the CA trusts but did not sign with (an older root): fall
      // through to the token, if any.
      if (!token) throw verdict;
    }
    if (token !== undefined) {
      const rec = this.registry.checkToken(token, keyHash);
      return { node: rec.node, attestation: 'token', tokenId: rec.id };
    }
    throw unauthenticated(
      'CA_NO_CREDENTIALS',
      'no credentials: present a Sail or bootstrap client certificate, or a join token as "authorization: Bearer <token>" (a client certificate that fails TLS verification, e.g. expired or from an unknown CA, counts as none)',
    );
  }

  private requireNode(node: string, how: Attestation): NodeEntry {
    const entry = this.registry.getNode(node);
    if (!entry) {
      throw denied(
        'CA_NODE_UNKNOWN',
        `node ${node} (${how} attestation) is not registered; create a token or 'sail node register' it`,
      );
    }
    return entry;
  }
}

/**
 * Picks the SPIFFE ID to issue: the one the request names (field, else the CSR's single URI SAN),
 * which must be assigned to the node; without one, the node's only identity.
 * @throws InvalidInputError for a malformed or ambiguous request; NotAuthorizedError for an
 *   identity the node is not assigned
 */
export function chooseIdentity(
  entry: NodeEntry,
  requested: string,
  csrUris: readonly string[],
  trustDomain: string,
): string {
  if (csrUris.length > 1)
    throw invalid(
      'CA_CSR_INVALID',
      `certificate request asks for ${csrUris.length} URI SANs; a SPIFFE certificate has exactly one`,
    );
  if (requested && csrUris[0] && requested !== csrUris[0]) {
    throw invalid(
      'CA_CSR_INVALID',
      `spiffe_id ${requested} differs from the request's URI SAN ${csrUris[0]}`,
    );
  }
  const want = requested || csrUris[0];
  if (want) {
    const id = parseSpiffeId(want);
    if (!id)
      throw invalid(
        'CA_CSR_INVALID',
        `${JSON.stringify(want)} is not a SPIFFE ID of the form spiffe://TRUST_DOMAIN/ns/NS/sa/SA`,
      );
    if (id.trustDomain !== trustDomain) {
      throw denied(
        'CA_IDENTITY_DENIED',
        `node ${entry.name} asked for ${want} but this CA's trust domain is ${trustDomain}`,
      );
    }
    if (!entry.spiffeIds.includes(want)) {
      throw denied(
        'CA_IDENTITY_DENIED',
        `node ${entry.name} is not assigned ${want} (assigned: ${entry.spiffeIds.join(', ')})`,
      );
    }
    return want;
  }
  if (entry.spiffeIds.length !== 1) {
    throw invalid(
      'CA_IDENTITY_AMBIGUOUS',
      `node ${entry.name} is assigned ${entry.spiffeIds.length} identities; name one in the request`,
    );
  }
  return entry.spiffeIds[0] as string;
}
