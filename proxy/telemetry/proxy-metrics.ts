/**
 * The proxy's own metrics (`sail_proxy_*`): xDS connection and versions, NACKs, the workload
 * certificate's remaining lifetime, bound listeners and open connections. They are read from the
 * Proxy at scrape time through `collect` callbacks, so nothing on the data path updates them.
 */
import { prom } from '../../common/metrics';
import type { XdsKind } from '../model';

/** What the Proxy reports; each callback is cheap and called once per scrape. */
export interface ProxyStatusSource {
  /** True when `/ready` answers 200. */
  ready(): boolean;
  /** True while the ADS stream to pilot is up. */
  xdsConnected(): boolean;
  /** version_info of the configuration in force, per type ('' before the first). */
  configVersions(): Readonly<Record<XdsKind, string>>;
  /** Responses rejected (NACKed) since start. */
  xdsNacks(): number;
  /** Configurations applied since start (pushes and the cached one at start). */
  configUpdates(): number;
  /** The workload certificate's notAfter (ms since the epoch); undefined when none is loaded. */
  certificateNotAfter(): number | undefined;
  /** Listeners with a bound socket. */
  listenersBound(): number;
  /** Downstream connections open now. */
  activeConnections(): number;
  /** Wall clock, ms. */
  now(): number;
}

const KINDS: readonly XdsKind[] = ['clusters', 'endpoints', 'listeners', 'routes'];

/**
 * Registers the sail_proxy_* metrics in `registry`, read from `source` at each scrape. Each gauge
 * says how a `--concurrency` primary merges the workers' values (prom-client's `aggregator`,
 * default sum): ready and connected are the least of them, the config versions each one in force.
 */
export function registerProxyMetrics(registry: prom.Registry, source: ProxyStatusSource): void {
  const registers = [registry];
  new prom.Gauge({
    name: 'sail_proxy_ready',
    aggregator: 'min',
    help: '1 when the proxy is ready (configuration applied and certificate loaded), else 0',
    registers,
    collect() {
      this.set(source.ready() ? 1 : 0);
    },
  });
  new prom.Gauge({
    name: 'sail_proxy_xds_connected',
    aggregator: 'min',
    help: '1 while the xDS stream to pilot is up, else 0',
    registers,
    collect() {
      this.set(source.xdsConnected() ? 1 : 0);
    },
  });
  new prom.Gauge({
    name: 'sail_proxy_xds_config_info',
    aggregator: 'max',
    help: 'The version_info in force per xDS type (value always 1)',
    labelNames: ['type', 'version'],
    registers,
    collect() {
      // One series per type: drop the previous version's.
      this.reset();
      const versions = source.configVersions();
      for (const type of KINDS) this.set({ type, version: versions[type] || 'none' }, 1);
    },
  });
  new prom.Counter({
    name: 'sail_proxy_xds_nacks_total',
    help: 'xDS responses rejected (NACKed): the previous configuration stayed in force',
    registers,
    collect() {
      this.reset();
      this.inc(source.xdsNacks());
    },
  });
  new prom.Counter({
    name: 'sail_proxy_config_updates_total',
    help: 'Configurations applied (pushes from pilot, and the last-known-good one at start)',
    registers,
    collect() {
      this.reset();
      this.inc(source.configUpdates());
    },
  });
  new prom.Gauge({
    name: 'sail_proxy_cert_expiry_seconds',
    aggregator: 'min',
    help: 'Seconds until the workload certificate expires; 0 when none is loaded or it expired',
    registers,
    collect() {
      const notAfter = source.certificateNotAfter();
      this.set(notAfter === undefined ? 0 : Math.max(0, (notAfter - source.now()) / 1000));
    },
  });
  new prom.Gauge({
    name: 'sail_proxy_listeners_bound',
    aggregator: 'max',
    help: 'Listeners with a bound socket',
    registers,
    collect() {
      this.set(source.listenersBound());
    },
  });
  new prom.Gauge({
    name: 'sail_proxy_active_connections',
    help: 'Downstream connections open now',
    registers,
    collect() {
      this.set(source.activeConnections());
    },
  });
}
