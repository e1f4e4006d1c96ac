/**
 * The traffic policy that applies to one cluster (Istio's MergeTrafficPolicy): the
 * DestinationRule's top-level policy, overridden field by field by its port-level settings for
 * the port, then by the subset's policy, then by the subset's port-level settings.
 */
import type { DestinationRuleSpec, Subset, TrafficPolicy } from '../../config/types';

/** A traffic policy without port-level settings: what one cluster gets. */
export type EffectivePolicy = Omit<TrafficPolicy, 'portLevelSettings'>;

function overlay(
  base: EffectivePolicy,
  top: TrafficPolicy | undefined,
  port: number,
): EffectivePolicy {
  if (!top) return base;
  const out: EffectivePolicy = { ...base };
  const apply = (p: EffectivePolicy) => {
    if (p.loadBalancer) out.loadBalancer = p.loadBalancer;
    if (p.connectionPool) out.connectionPool = p.connectionPool;
    if (p.outlierDetection) out.outlierDetection = p.outlierDetection;
    if (p.tls) out.tls = p.tls;
  };
  apply(top);
  const portLevel = top.portLevelSettings?.find(s => s.port?.number === port);
  if (portLevel) apply(portLevel);
  return out;
}

/** The subset named `name` of a rule, if defined. */
export function findSubset(
  spec: DestinationRuleSpec | undefined,
  name: string,
): Subset | undefined {
  return spec?.subsets?.find(s => s.name === name);
}

/** The policy for `port` and `subset` (`''` for none) under `spec` (absent: no policy). */
export function effectivePolicy(
  spec: DestinationRuleSpec | undefined,
  port: number,
  subset: string,
): EffectivePolicy {
  if (!spec) return {};
  let policy = overlay({}, spec.trafficPolicy, port);
  if (subset !== '') policy = overlay(policy, findSubset(spec, subset)?.trafficPolicy, port);
  return policy;
}
