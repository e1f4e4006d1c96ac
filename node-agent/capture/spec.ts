/** Turns the node agent's resolved settings into a {@link CaptureSpec}. */
import { parseHostPort } from '../../common/config';
import { InvalidInputError } from '../../common/errors';
import type { NodeAgentSettings } from '../options';
import { validateCaptureSpec } from './rules';
import type { CaptureSpec } from './types';

/** The proxy's capture listener for outbound connections (virtualOutbound). */
export const DEFAULT_OUTBOUND_PORT = 15001;
/** The proxy's capture listener for inbound connections (virtualInbound). */
export const DEFAULT_INBOUND_PORT = 15006;

/**
 * Capture keys the config schema does not have yet (the lead adds `capture.excludeOutboundPorts`
 * and `capture.ipv6`); read optionally so this works before and after.
 */
interface FutureCaptureKeys {
  readonly excludeOutboundPorts?: string;
  readonly ipv6?: 'auto' | boolean;
}

/**
 * The capture spec of a host: the config's capture section, the proxy user's ids and, when the
 * agent's DNS server is enabled and `nameservers` (the host's original resolvers) is given and
 * not empty, DNS capture to the port of `dns.listen`.
 * @throws InvalidInputError when capture.mode is `none` (callers skip capture before asking) or a
 *   value is invalid, naming the field
 */
export function captureSpecFromSettings(
  settings: NodeAgentSettings,
  proxy: { readonly uid: number; readonly gid: number },
  nameservers: readonly string[] | undefined,
): CaptureSpec {
  const c = settings.capture;
  if (c.mode === 'none') {
    throw new InvalidInputError('capture.mode: none means no capture; there is no spec to build');
  }
  const future = c as FutureCaptureKeys;
  let dns: CaptureSpec['dns'];
  if (settings.dns.enabled && nameservers && nameservers.length > 0) {
    const listen = parseHostPort(settings.dns.listen);
    if (!listen || listen.port === 0) {
      throw new InvalidInputError(
        `dns.listen: ${JSON.stringify(settings.dns.listen)} has no fixed port to redirect DNS to`,
      );
    }
    dns = { port: listen.port, nameservers: [...nameservers] };
  }
  const spec: CaptureSpec = {
    mode: c.mode,
    proxyUid: proxy.uid,
    proxyGid: proxy.gid,
    outboundPort: DEFAULT_OUTBOUND_PORT,
    inboundPort: DEFAULT_INBOUND_PORT,
    includeOutboundCidrs: c.includeOutboundCidrs,
    excludeOutboundCidrs: c.excludeOutboundCidrs,
    includeInboundPorts: c.includeInboundPorts,
    excludeInboundPorts: c.excludeInboundPorts,
    excludeOutboundPorts: future.excludeOutboundPorts ?? '',
    ...(dns ? { dns } : {}),
    ipv6: future.ipv6 ?? 'auto',
  };
  validateCaptureSpec(spec);
  return spec;
}
