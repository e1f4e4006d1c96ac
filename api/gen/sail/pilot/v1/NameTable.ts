// Original file: sail/pilot/v1/nds.proto


/**
 * One hostname's addresses.
 */
export interface _sail_pilot_v1_NameTable_NameInfo {
  /**
   * IPv4 and IPv6 addresses, sorted: the service's VIPs (ServiceEntry `addresses` that are
   * single IPs) when it has any, else the IPs of its endpoints (the healthy ones; all of them
   * when none is healthy).
   */
  'ips'?: (string)[];
  /**
   * Where the service came from (the kind of the config object, e.g. "ServiceEntry").
   */
  'registry'?: (string);
  /**
   * For hosts of the form NAME.NAMESPACE.svc.DOMAIN_SUFFIX: NAME, so the resolver also answers
   * NAME (in the node's own namespace), NAME.NAMESPACE and NAME.NAMESPACE.svc. Empty otherwise.
   */
  'shortname'?: (string);
  /**
   * For hosts of the form NAME.NAMESPACE.svc.DOMAIN_SUFFIX: NAMESPACE. Empty otherwise.
   */
  'namespace'?: (string);
}

/**
 * One hostname's addresses.
 */
export interface _sail_pilot_v1_NameTable_NameInfo__Output {
  /**
   * IPv4 and IPv6 addresses, sorted: the service's VIPs (ServiceEntry `addresses` that are
   * single IPs) when it has any, else the IPs of its endpoints (the healthy ones; all of them
   * when none is healthy).
   */
  'ips': (string)[];
  /**
   * Where the service came from (the kind of the config object, e.g. "ServiceEntry").
   */
  'registry': (string);
  /**
   * For hosts of the form NAME.NAMESPACE.svc.DOMAIN_SUFFIX: NAME, so the resolver also answers
   * NAME (in the node's own namespace), NAME.NAMESPACE and NAME.NAMESPACE.svc. Empty otherwise.
   */
  'shortname': (string);
  /**
   * For hosts of the form NAME.NAMESPACE.svc.DOMAIN_SUFFIX: NAMESPACE. Empty otherwise.
   */
  'namespace': (string);
}

/**
 * Every mesh hostname visible to one node, with the addresses its DNS resolver answers.
 */
export interface NameTable {
  /**
   * Fully qualified hostname (lower case, no trailing dot) → its addresses.
   */
  'table'?: ({[key: string]: _sail_pilot_v1_NameTable_NameInfo});
}

/**
 * Every mesh hostname visible to one node, with the addresses its DNS resolver answers.
 */
export interface NameTable__Output {
  /**
   * Fully qualified hostname (lower case, no trailing dot) → its addresses.
   */
  'table': ({[key: string]: _sail_pilot_v1_NameTable_NameInfo__Output});
}
