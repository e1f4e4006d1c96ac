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

export class Authenticator {
  constructor(
    private readonly registry: Registry,
    private readonly signingKey: () => crypto.KeyObject,
    private readonly bootstrapCas: readonly BootstrapCa[],
  ) {}

  /**
   * Authenticates a caller by, in order: a Sail certificate (renewal), a bootstrap certificate,
   * a join token. The TLS layer has already verified any peer certificate's chain and validity
   * against the mesh roots plus the bootstrap CAs.
   * @throws NotAuthenticatedError or NotAuthorizedError saying why
   */
  authenticate(
    peerCertDer: Buffer | undefined,
    token: string | undefined,
    keyHash: string,
  ): Caller {
    if (peerCertDer) {
      const cert = parseCertificate(peerCertDer);
      const node = nodeNameOf(cert);
      if (isSignedBy(peerCertDer, this.signingKey())) {
        if (!node) throw unauthenticated('CA_CERT_UNTRUSTED', 'client certificate names no node');
        this.requireNode(node, 'certificate');
        return { node, attestation: 'certificate' };
      }
      const bootstrap = this.bootstrapCas.find(b => isSignedBy(peerCertDer, b.publicKey));
      if (bootstrap) {
        if (!node)
          throw unauthenticated(
            'CA_CERT_UNTRUSTED',
            `bootstrap certificate from ${bootstrap.file} names no node (set its CN)`,
          );
        this.requireNode(node, 'bootstrap');
        return { node, attestation: 'bootstrap' };
      }
      // A certificate from a root the CA trusts but did not sign with (an older root): fall
      // through to the token, if any.
      if (!token)
        throw unauthenticated(
          'CA_CERT_UNTRUSTED',
          'client certificate is not signed by this CA or a bootstrap CA',
        );
    }
    if (token !== undefined) {
      const rec = this.registry.checkToken(token, keyHash);
      return { node: rec.node, attestation: 'token', tokenId: rec.id };
    }
    throw unauthenticated(
      'CA_NO_CREDENTIALS',
      'no credentials: present a Sail or bootstrap client certificate, or a join token as "authorization: Bearer <token>"',
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
