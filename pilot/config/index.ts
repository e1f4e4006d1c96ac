/**
 * Pilot's configuration model: parsing Istio documents, validating them like `istioctl analyze`,
 * the kinds Sail serves, and the helpers the store and the xDS generator share.
 */
export type { ParsedDocument, PathSegment } from './parse';
export { CONFIG_EXTENSIONS, loadSources, parseSource, readStdin } from './parse';
export type { ObjectOrigin, ValidateOptions, ValidateSetOptions } from './validate';
export { formatPath, STORE_SOURCE, validateDocuments, validateSet } from './validate';
export type { KindInfo } from './kinds';
export { describeAcceptedKinds, KIND_INFO, lookupKind } from './kinds';
export { DEFAULT_DOMAIN_SUFFIX, hostCovers, resolveHost } from './names';
export { isMeshBound, MESH_GATEWAY } from './checks';
export {
  canonicalize,
  deepEqual,
  describeObject,
  keyString,
  objectKey,
  specEquals,
} from './objects';
export { parseIstioDuration, PROTOCOLS } from './schemas';
export * from './types';
