/**
 * Transport sockets: Envoy's `DownstreamTlsContext` / `UpstreamTlsContext` (and raw_buffer) as
 * the model's DownstreamTls / UpstreamTls. Certificates come by SDS name (`default`, `ROOTCA`,
 * served from the node agent's directory) or as file names; inline key material and certificate
 * providers are not supported.
 * @internal
 */
import type {
  CertificateValidation,
  DownstreamTls,
  SanMatcher,
  SecretRef,
  TrustRef,
  UpstreamTls,
} from '../model';
import { SDS_CERT_NAME, SDS_ROOT_NAME } from '../model';
import {
  at,
  elem,
  enumOf,
  extension,
  fail,
  idx,
  isSet,
  list,
  obj,
  rejectSet,
  reqStr,
  str,
  stringMatcher,
  strList,
  wrappedBool,
  type Json,
  type Where,
} from './compile-common';

const DOWNSTREAM_TLS = 'envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';
const UPSTREAM_TLS = 'envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext';
const RAW_BUFFER = 'envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer';
const TLS_SOCKET_NAME = 'envoy.transport_sockets.tls';
const RAW_BUFFER_NAME = 'envoy.transport_sockets.raw_buffer';

/** Which TLS message a transport socket carries; undefined for plaintext. */
function tlsConfig(w: Where, socket: Json, path: string, expected: string): Json | undefined {
  const ext = extension(w, socket, path);
  if (ext.type === RAW_BUFFER || (ext.type === '' && ext.name === RAW_BUFFER_NAME))
    return undefined;
  if (ext.type === expected || (ext.type === '' && ext.name === TLS_SOCKET_NAME)) return ext.config;
  fail(w, path, `unsupported transport socket ${ext.type || ext.name}`);
}

/** A filter chain's `transport_socket`: undefined for plaintext. */
export function downstreamTls(w: Where, socket: Json, path: string): DownstreamTls | undefined {
  const config = tlsConfig(w, socket, path, DOWNSTREAM_TLS);
  if (config === undefined) return undefined;
  const p = at(path, 'typedConfig');
  if (wrappedBool(w, config, 'requireSni', p)) fail(w, at(p, 'requireSni'), 'not supported');
  const common = obj(w, config, 'commonTlsContext', p) ?? {};
  const cp = at(p, 'commonTlsContext');
  const certificate = certificateOf(w, common, cp);
  if (!certificate) fail(w, cp, 'a server certificate is required');
  const validation = validationOf(w, common, cp);
  return {
    certificate,
    ...(validation ? { validation } : {}),
    requireClientCertificate: wrappedBool(w, config, 'requireClientCertificate', p) ?? false,
    alpn: strList(w, common, 'alpnProtocols', cp),
  };
}

/** A cluster's (or transport socket match's) `transport_socket`: undefined for plaintext. */
export function upstreamTls(w: Where, socket: Json, path: string): UpstreamTls | undefined {
  const config = tlsConfig(w, socket, path, UPSTREAM_TLS);
  if (config === undefined) return undefined;
  const p = at(path, 'typedConfig');
  const common = obj(w, config, 'commonTlsContext', p) ?? {};
  const cp = at(p, 'commonTlsContext');
  const certificate = certificateOf(w, common, cp);
  const validation = validationOf(w, common, cp);
  const sni = str(w, config, 'sni', p);
  // What metrics call mutual_tls: the mesh's own workload certificate and roots.
  const mesh =
    certificate?.kind === 'sds' &&
    certificate.name === SDS_CERT_NAME &&
    validation?.trust?.kind === 'sds' &&
    validation.trust.name === SDS_ROOT_NAME;
  return {
    ...(certificate ? { certificate } : {}),
    ...(validation ? { validation } : {}),
    ...(sni !== undefined ? { sni } : {}),
    alpn: strList(w, common, 'alpnProtocols', cp),
    mesh,
  };
}

/** Fields of CommonTlsContext that select a mechanism the proxy does not have. */
const UNSUPPORTED_COMMON = [
  'tlsCertificateProviderInstance',
  'tlsCertificateCertificateProvider',
  'tlsCertificateCertificateProviderInstance',
  'validationContextCertificateProvider',
  'validationContextCertificateProviderInstance',
  'customHandshaker',
];

/** The one certificate of a CommonTlsContext; undefined when none. */
function certificateOf(w: Where, common: Json, path: string): SecretRef | undefined {
  rejectSet(w, common, path, UNSUPPORTED_COMMON);
  const sds = list(w, common, 'tlsCertificateSdsSecretConfigs', path);
  const files = list(w, common, 'tlsCertificates', path);
  if (sds.length + files.length > 1) fail(w, path, 'more than one certificate is not supported');
  if (sds.length === 1) {
    const p = idx(at(path, 'tlsCertificateSdsSecretConfigs'), 0);
    return { kind: 'sds', name: reqStr(w, elem(w, sds[0], p), 'name', p) };
  }
  if (files.length === 1) {
    const p = idx(at(path, 'tlsCertificates'), 0);
    const cert = elem(w, files[0], p);
    rejectSet(w, cert, p, ['pkcs12', 'privateKeyProvider', 'password']);
    return {
      kind: 'files',
      certChainPath: filename(w, cert, 'certificateChain', p),
      privateKeyPath: filename(w, cert, 'privateKey', p),
    };
  }
  return undefined;
}

/** A DataSource that must name a file (inline key material does not travel in Sail's xDS). */
function filename(w: Where, o: Json, key: string, path: string): string {
  const ds = obj(w, o, key, path);
  const p = at(path, key);
  if (ds === undefined) fail(w, p, 'required');
  const file = str(w, ds, 'filename', p);
  if (file === undefined) fail(w, p, 'only filename data sources are supported');
  return file;
}

/**
 * The peer check of a CommonTlsContext: `combined_validation_context` (inline SAN matchers plus
 * the SDS roots), `validation_context_sds_secret_config` or `validation_context`. Undefined when
 * there is none: Envoy then does not verify the peer.
 */
function validationOf(w: Where, common: Json, path: string): CertificateValidation | undefined {
  let inline: Json | undefined;
  let inlinePath = '';
  let sdsName: string | undefined;
  const combined = obj(w, common, 'combinedValidationContext', path);
  if (combined) {
    const p = at(path, 'combinedValidationContext');
    rejectSet(w, combined, p, [
      'validationContextCertificateProvider',
      'validationContextCertificateProviderInstance',
    ]);
    inline = obj(w, combined, 'defaultValidationContext', p) ?? {};
    inlinePath = at(p, 'defaultValidationContext');
    const sds = obj(w, combined, 'validationContextSdsSecretConfig', p);
    if (sds) sdsName = reqStr(w, sds, 'name', at(p, 'validationContextSdsSecretConfig'));
  } else {
    const sds = obj(w, common, 'validationContextSdsSecretConfig', path);
    if (sds) sdsName = reqStr(w, sds, 'name', at(path, 'validationContextSdsSecretConfig'));
    inline = obj(w, common, 'validationContext', path);
    inlinePath = at(path, 'validationContext');
  }
  if (inline === undefined && sdsName === undefined) return undefined;
  const v = inline ?? {};
  rejectSet(w, v, inlinePath, [
    'caCertificateProviderInstance',
    'verifyCertificateSpki',
    'verifyCertificateHash',
    'requireSignedCertificateTimestamp',
    'crl',
    'allowExpiredCertificate',
    'customValidatorConfig',
  ]);
  const sanMatchers = sanMatchersOf(w, v, inlinePath);
  // The SDS secret replaces the inline trust anchors (Envoy merges it over the default context).
  let trust: TrustRef | undefined;
  if (sdsName !== undefined) trust = { kind: 'sds', name: sdsName };
  else if (obj(w, v, 'trustedCa', inlinePath))
    trust = { kind: 'files', path: filename(w, v, 'trustedCa', inlinePath) };
  else if (obj(w, v, 'systemRootCerts', inlinePath)) trust = { kind: 'system' };
  if (trust === undefined) {
    // Envoy: "SAN-based verification of peer certificates without trusted CA is insecure and not
    // allowed"; with neither, the context verifies nothing.
    if (sanMatchers.length > 0) fail(w, inlinePath, 'subject alt name matchers need a trusted CA');
    return undefined;
  }
  const chain = enumOf(w, v, 'trustChainVerification', inlinePath, [
    'VERIFY_TRUST_CHAIN',
    'ACCEPT_UNTRUSTED',
  ]);
  // ACCEPT_UNTRUSTED: SANs are still checked, the chain is not.
  return chain === 'ACCEPT_UNTRUSTED' ? { sanMatchers } : { trust, sanMatchers };
}

const SAN_TYPES = [
  'SAN_TYPE_UNSPECIFIED',
  'EMAIL',
  'DNS',
  'URI',
  'IP_ADDRESS',
  'OTHER_NAME',
] as const;
/** Envoy matches a legacy (untyped) matcher against each of these SAN types. */
const LEGACY_SAN_TYPES = ['DNS', 'URI', 'EMAIL', 'IP_ADDRESS'] as const;

function sanMatchersOf(w: Where, v: Json, path: string): SanMatcher[] {
  const out: SanMatcher[] = [];
  const typed = list(w, v, 'matchTypedSubjectAltNames', path);
  for (let i = 0; i < typed.length; i++) {
    const p = idx(at(path, 'matchTypedSubjectAltNames'), i);
    const m = elem(w, typed[i], p);
    const sanType = enumOf(w, m, 'sanType', p, SAN_TYPES);
    if (sanType === 'SAN_TYPE_UNSPECIFIED' || sanType === 'OTHER_NAME')
      fail(w, at(p, 'sanType'), `${sanType} is not supported`);
    const matcher = obj(w, m, 'matcher', p);
    if (!matcher) fail(w, at(p, 'matcher'), 'required');
    out.push({ sanType, matcher: stringMatcher(w, matcher, at(p, 'matcher')) });
  }
  const legacy = list(w, v, 'matchSubjectAltNames', path);
  for (let i = 0; i < legacy.length; i++) {
    const p = idx(at(path, 'matchSubjectAltNames'), i);
    const matcher = stringMatcher(w, elem(w, legacy[i], p), p);
    for (const sanType of LEGACY_SAN_TYPES) out.push({ sanType, matcher });
  }
  return out;
}

/** Whether a transport socket is set at all (an empty message counts as absent). */
export function hasSocket(socket: Json | undefined): socket is Json {
  return socket !== undefined && (isSet(socket.name) || isSet(socket.typedConfig));
}
