/** Prometheus metrics (prom-client): one Registry per component, so tests and processes do not share globals. */
import * as client from 'prom-client';

export { client as prom };

/** A fresh registry; `withDefaults` adds the process metrics (CPU, memory, fds, event loop lag). */
export function createRegistry(withDefaults: boolean): client.Registry {
  const registry = new client.Registry();
  if (withDefaults) client.collectDefaultMetrics({ register: registry });
  return registry;
}

/** Renders one or more registries in the text exposition format. */
export async function renderMetrics(
  ...registries: client.Registry[]
): Promise<{ text: string; contentType: string }> {
  const merged =
    registries.length === 1
      ? (registries[0] as client.Registry)
      : client.Registry.merge(registries);
  return { text: await merged.metrics(), contentType: merged.contentType };
}
