import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError } from '../common/errors';
import { makeTmpDir } from '../test/helpers/tmp-dir';
import { isCidr, loadNodeAgentConfig, parseNodeAgentConfig } from './config';

/** The sketch of DESIGN §3.4, verbatim. */
const DESIGN_SKETCH = `
nodeName: vm-1                      # default: hostname
controlPlane:
  address: 10.0.0.10                # CA :15012, pilot :15010, mixer :9091 unless overridden below
  caAddress: 10.0.0.10:15012
  pilotAddress: 10.0.0.10:15010
  rootCertFile: /etc/sail/root-cert.pem
  tokenFile: /etc/sail/join-token
workload:
  namespace: default
  serviceAccount: reviews
  labels: { app: reviews, version: v1 }
  ports: [ { name: http, port: 9080 } ]   # port names carry the protocol: http-, http2-, grpc-, tcp-, tls-, mongo-, redis-
  address: auto                          # default: this host's source address toward the control plane
  health: { http: { port: 9080, path: /health }, intervalSeconds: 5 }
certs: { dir: /var/lib/sail/certs, ttl: 24h }
stateDir: /var/lib/sail
capture: { mode: redirect, includeOutboundCidrs: "*", excludeOutboundCidrs: "", includeInboundPorts: "*", excludeInboundPorts: "22" }   # mode: redirect | tproxy | none
dns: { enabled: true, listen: 127.0.0.1:15053 }
proxy: { enabled: true }             # false: identity only (certificates for applications that do their own mTLS)
status: { listen: 127.0.0.1:15020 }
`;

const env = { hostname: 'host-a', baseDir: '/etc/sail' };

describe('parseNodeAgentConfig', () => {
  it('accepts the sketch of DESIGN §3.4', () => {
    const { settings, logLevel } = parseNodeAgentConfig('node-agent.yaml', DESIGN_SKETCH, env);
    expect(logLevel).toBe('info');
    expect(settings).toEqual({
      nodeName: 'vm-1',
      trustDomain: 'cluster.local',
      controlPlane: {
        caAddress: '10.0.0.10:15012',
        pilotAddress: '10.0.0.10:15010',
        mixerAddress: '10.0.0.10:9091',
        caSpiffeId: 'spiffe://cluster.local/ns/sail-system/sa/sail-control-plane',
        rootCertFile: '/etc/sail/root-cert.pem',
        tokenFile: '/etc/sail/join-token',
      },
      workload: {
        namespace: 'default',
        serviceAccount: 'reviews',
        labels: { app: 'reviews', version: 'v1' },
        ports: [{ name: 'http', port: 9080 }],
        address: 'auto',
        health: {
          http: { port: 9080, path: '/health' },
          intervalMs: 5000,
          timeoutMs: 2000,
          failureThreshold: 3,
          successThreshold: 1,
        },
      },
      certs: { dir: '/var/lib/sail/certs', ttlMs: 24 * 3600_000, keyAlgorithm: 'ec-p256' },
      stateDir: '/var/lib/sail',
      capture: {
        mode: 'redirect',
        includeOutboundCidrs: '*',
        excludeOutboundCidrs: '',
        includeInboundPorts: '*',
        excludeInboundPorts: '22',
        excludeOutboundPorts: '',
        ipv6: 'auto',
        preserveSourceAddress: true,
      },
      dns: {
        enabled: true,
        listen: '127.0.0.1:15053',
        resolvConf: '/etc/resolv.conf',
        stripSearchDomains: true,
      },
      proxy: {
        enabled: true,
        user: 'sail-proxy',
        adminListen: '127.0.0.1:15000',
        stopGraceMs: 20_000,
        accessLog: false,
        nodeOptions: '--max-semi-space-size=2',
        concurrency: 1,
      },
      proxyless: {
        enabled: true,
        socket: '/run/sail/xds.sock',
        bootstrapFile: '/run/sail/grpc-bootstrap.json',
      },
      runDir: '/run/sail',
      status: { listen: '127.0.0.1:15020' },
    });
  });

  it('fills every default from the control plane address alone', () => {
    const { settings } = parseNodeAgentConfig(
      'x.yaml',
      'controlPlane: { address: cp.example.com }',
      env,
    );
    expect(settings.nodeName).toBe('host-a');
    expect(settings.controlPlane).toEqual({
      caAddress: 'cp.example.com:15012',
      pilotAddress: 'cp.example.com:15010',
      mixerAddress: 'cp.example.com:9091',
      caSpiffeId: 'spiffe://cluster.local/ns/sail-system/sa/sail-control-plane',
      rootCertFile: '/etc/sail/root-cert.pem',
      tokenFile: '/etc/sail/join-token',
    });
    expect(settings.workload).toEqual({
      namespace: 'default',
      serviceAccount: 'default',
      labels: {},
      ports: [],
      address: 'auto',
    });
    expect(settings.certs).toEqual({
      dir: '/var/lib/sail/certs',
      ttlMs: 86_400_000,
      keyAlgorithm: 'ec-p256',
    });
    expect(settings.status.listen).toBe('127.0.0.1:15020');
    expect(settings.capture.excludeInboundPorts).toBe('22');
  });

  it('brackets an IPv6 control plane address', () => {
    const { settings } = parseNodeAgentConfig(
      'x.yaml',
      'controlPlane: { address: "fd00::10" }',
      env,
    );
    expect(settings.controlPlane.caAddress).toBe('[fd00::10]:15012');
  });

  it('derives the CA identity from the trust domain', () => {
    const { settings } = parseNodeAgentConfig(
      'x.yaml',
      'trustDomain: example.org\ncontrolPlane: { address: 10.0.0.1 }',
      env,
    );
    expect(settings.controlPlane.caSpiffeId).toBe(
      'spiffe://example.org/ns/sail-system/sa/sail-control-plane',
    );
  });

  it('takes the added keys: bootstrap certificate, key algorithm, log level', () => {
    const { settings, logLevel } = parseNodeAgentConfig(
      'x.yaml',
      `logLevel: debug
controlPlane: { address: 10.0.0.1, bootstrapCertFile: boot.pem, bootstrapKeyFile: boot-key.pem }
certs: { keyAlgorithm: ec-p384, ttl: 1h }`,
      env,
    );
    expect(logLevel).toBe('debug');
    expect(settings.controlPlane.bootstrapCertFile).toBe('/etc/sail/boot.pem');
    expect(settings.controlPlane.bootstrapKeyFile).toBe('/etc/sail/boot-key.pem');
    expect(settings.certs).toMatchObject({ keyAlgorithm: 'ec-p384', ttlMs: 3600_000 });
  });

  it('resolves relative paths against the config file directory', () => {
    const { settings } = parseNodeAgentConfig(
      'x.yaml',
      'controlPlane: { address: 10.0.0.1, rootCertFile: root.pem }\ncerts: { dir: certs }\nstateDir: state',
      {
        hostname: 'h',
        baseDir: '/opt/sail',
      },
    );
    expect(settings.controlPlane.rootCertFile).toBe('/opt/sail/root.pem');
    expect(settings.certs.dir).toBe('/opt/sail/certs');
    expect(settings.stateDir).toBe('/opt/sail/state');
  });

  const bad = [
    {
      name: 'an unknown top-level key',
      yaml: 'controlPlane: { address: a }\nnodename: x',
      want: 'x.yaml: (top level): unknown field "nodename"',
    },
    {
      name: 'an unknown nested key, naming its path',
      yaml: 'controlPlane: { address: a }\nworkload: { namspace: x }',
      want: 'x.yaml: workload: unknown field "namspace"',
    },
    {
      name: 'a bad duration',
      yaml: 'controlPlane: { address: a }\ncerts: { ttl: 1 day }',
      want: 'x.yaml: certs.ttl: invalid duration "1 day"',
    },
    {
      name: 'a lifetime below the CA minimum',
      yaml: 'controlPlane: { address: a }\ncerts: { ttl: 5s }',
      want: 'x.yaml: certs.ttl: want at least 10s',
    },
    {
      name: 'a port out of range',
      yaml: 'controlPlane: { address: a }\nworkload: { ports: [ { name: http, port: 70000 } ] }',
      want: 'x.yaml: workload.ports.0.port: want a port number from 1 to 65535',
    },
    {
      name: 'a port that is not a number',
      yaml: 'controlPlane: { address: a }\nworkload: { ports: [ { name: http, port: "80" } ] }',
      want: 'x.yaml: workload.ports.0.port: want a port number',
    },
    {
      name: 'a duplicate port name',
      yaml: 'controlPlane: { address: a }\nworkload: { ports: [ { name: http, port: 80 }, { name: http, port: 81 } ] }',
      want: 'x.yaml: workload.ports.1.name: duplicate port name "http"',
    },
    {
      name: 'a status address without a port',
      yaml: 'controlPlane: { address: a }\nstatus: { listen: localhost }',
      want: 'x.yaml: status.listen: want HOST:PORT',
    },
    {
      name: 'a CA address with port 0',
      yaml: 'controlPlane: { caAddress: "a:0", pilotAddress: "a:1", mixerAddress: "a:2" }',
      want: 'x.yaml: controlPlane.caAddress: want HOST:PORT with a port from 1 to 65535',
    },
    {
      name: 'no control plane address',
      yaml: 'controlPlane: { caAddress: "a:15012" }',
      want: 'x.yaml: controlPlane.address: required unless pilotAddress, mixerAddress are set',
    },
    {
      name: 'no control plane at all',
      yaml: 'nodeName: x',
      want: 'x.yaml: controlPlane: required: where the control plane is',
    },
    {
      name: 'an address with a port',
      yaml: 'controlPlane: { address: "10.0.0.1:15012" }',
      want: 'x.yaml: controlPlane.address: want a host name or IP address without a port',
    },
    {
      name: 'a bootstrap certificate without its key',
      yaml: 'controlPlane: { address: a, bootstrapCertFile: b.pem }',
      want: 'x.yaml: controlPlane.bootstrapKeyFile: bootstrapCertFile and bootstrapKeyFile go together',
    },
    {
      name: 'an unknown key algorithm',
      yaml: 'controlPlane: { address: a }\ncerts: { keyAlgorithm: dsa }',
      want: 'x.yaml: certs.keyAlgorithm: want one of ec-p256',
    },
    {
      name: 'an invalid service account',
      yaml: 'controlPlane: { address: a }\nworkload: { serviceAccount: Reviews_SA }',
      want: 'x.yaml: workload.serviceAccount: invalid service account',
    },
    {
      name: 'an invalid trust domain',
      yaml: 'controlPlane: { address: a }\ntrustDomain: "Example Org"',
      want: 'x.yaml: trustDomain: invalid trust domain',
    },
    {
      name: 'an invalid label',
      yaml: 'controlPlane: { address: a }\nworkload: { labels: { "bad key!": x } }',
      want: 'x.yaml: workload.labels.bad key!: invalid label key',
    },
    {
      name: 'a bad capture mode',
      yaml: 'controlPlane: { address: a }\ncapture: { mode: nat }',
      want: 'x.yaml: capture.mode: want redirect, tproxy or none',
    },
    {
      name: 'a bad CIDR',
      yaml: 'controlPlane: { address: a }\ncapture: { excludeOutboundCidrs: "10.0.0.0/33" }',
      want: 'x.yaml: capture.excludeOutboundCidrs: "10.0.0.0/33" is not a CIDR',
    },
    {
      name: 'a bad inbound port list',
      yaml: 'controlPlane: { address: a }\ncapture: { excludeInboundPorts: "22,ssh" }',
      want: 'x.yaml: capture.excludeInboundPorts: "ssh" is not a port',
    },
    {
      name: 'a health check with two probes',
      yaml: 'controlPlane: { address: a }\nworkload: { health: { tcp: { port: 1 }, exec: { command: [/bin/true] } } }',
      want: 'x.yaml: workload.health: want exactly one of http, tcp or exec',
    },
    {
      name: 'an exec probe without a command',
      yaml: 'controlPlane: { address: a }\nworkload: { health: { exec: { command: [] } } }',
      want: 'x.yaml: workload.health.exec.command: want the program',
    },
    {
      name: 'a bad workload group',
      yaml: 'controlPlane: { address: a }\nworkload: { group: reviews }',
      want: 'x.yaml: workload.group: want a WorkloadGroup as NAMESPACE/NAME',
    },
    {
      name: 'a bad capture.ipv6',
      yaml: 'controlPlane: { address: a }\ncapture: { ipv6: maybe }',
      want: 'x.yaml: capture.ipv6: want auto, true or false',
    },
    {
      name: 'a bad proxy user',
      yaml: 'controlPlane: { address: a }\nproxy: { user: "Sail Proxy" }',
      want: 'x.yaml: proxy.user: want a system user name',
    },
    {
      name: 'a negative proxy concurrency',
      yaml: 'controlPlane: { address: a }\nproxy: { concurrency: -2 }',
      want: 'x.yaml: proxy.concurrency: want a number of worker processes from 0 to 256 (0: one per core)',
    },
    {
      name: 'a bad DNS upstream',
      yaml: 'controlPlane: { address: a }\ndns: { upstreams: [resolver.lan] }',
      want: 'x.yaml: dns.upstreams.0: want an IP address or IP:PORT',
    },
    {
      name: 'a health check with neither http nor tcp',
      yaml: 'controlPlane: { address: a }\nworkload: { health: { intervalSeconds: 5 } }',
      want: 'x.yaml: workload.health: want exactly one of http, tcp or exec',
    },
    {
      name: 'a non-boolean switch',
      yaml: 'controlPlane: { address: a }\nproxy: { enabled: "yes" }',
      want: 'x.yaml: proxy.enabled:',
    },
    {
      name: 'an unknown log level',
      yaml: 'controlPlane: { address: a }\nlogLevel: verbose',
      want: 'x.yaml: logLevel: want one of fatal',
    },
    { name: 'invalid YAML', yaml: 'controlPlane: { address: a\n', want: 'x.yaml: invalid YAML' },
  ];
  it.each(bad)('rejects $name', ({ yaml, want }) => {
    let caught: unknown;
    try {
      parseNodeAgentConfig('x.yaml', yaml, env);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as Error).message).toContain(want);
  });

  it('rejects a host name that is not a valid node name, asking for nodeName', () => {
    expect(() =>
      parseNodeAgentConfig('x.yaml', 'controlPlane: { address: a }', { hostname: 'my_host' }),
    ).toThrow('x.yaml: nodeName: the host name "my_host" is not a valid node name; set nodeName');
  });
});

describe('loadNodeAgentConfig', () => {
  it('accepts the sample packaging/node-agent.yaml, whose values are the defaults', () => {
    const sample = path.join(__dirname, '..', 'packaging', 'node-agent.yaml');
    const fromSample = loadNodeAgentConfig(sample, { hostname: 'vm-1' }).settings;
    const minimal = parseNodeAgentConfig(sample, 'controlPlane: { address: 10.0.0.10 }', {
      hostname: 'vm-1',
      baseDir: path.dirname(sample),
    }).settings;
    expect(fromSample).toEqual(minimal);
  });

  it('reads a file and resolves paths against its directory', () => {
    const tmp = makeTmpDir();
    try {
      const file = path.join(tmp.dir, 'node-agent.yaml');
      fs.writeFileSync(file, 'controlPlane: { address: 10.0.0.1, tokenFile: token }\n');
      const { settings } = loadNodeAgentConfig(file, { hostname: 'h' });
      expect(settings.controlPlane.tokenFile).toBe(path.join(tmp.dir, 'token'));
    } finally {
      tmp.cleanup();
    }
  });

  it('names a missing file', () => {
    expect(() => loadNodeAgentConfig('/nonexistent/node-agent.yaml')).toThrow(
      'cannot read config file /nonexistent/node-agent.yaml: ENOENT',
    );
  });
});

describe('isCidr', () => {
  it.each([
    ['10.0.0.0/8', true],
    ['10.0.0.1', true],
    ['fd00::/8', true],
    ['10.0.0.0/33', false],
    ['fd00::/129', false],
    ['10.0.0.0/8/1', false],
    ['example.com/8', false],
    ['10.0.0.0/x', false],
  ])('%s is %s', (cidr, want) => {
    expect(isCidr(cidr)).toBe(want);
  });
});
