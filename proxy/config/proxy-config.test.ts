import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigError } from '../../common/errors';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import {
  formatNodeId,
  loadProxyConfig,
  parseNodeId,
  parseProxyConfig,
  type ProxyConfigOverrides,
} from './proxy-config';

const FILE = '/etc/sail/proxy.yaml';
const MINIMAL = `
node: { name: vm-1, ip: 10.0.0.5 }
pilotAddress: 10.0.0.10:15010
`;

function parse(text: string, overrides: ProxyConfigOverrides = {}) {
  return parseProxyConfig(FILE, text, overrides);
}

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('parseProxyConfig', () => {
  it('fills every default from a minimal file', () => {
    const c = parse(MINIMAL);
    expect(c.logLevel).toBe('info');
    expect(c.concurrency).toBe(1);
    expect(c.options).toEqual({
      nodeId: 'sidecar~10.0.0.5~vm-1.default~default.svc.cluster.local',
      workload: { name: 'vm-1', namespace: 'default', labels: {} },
      trustDomain: 'cluster.local',
      pilotAddress: '10.0.0.10:15010',
      pilotSpiffeId: 'spiffe://cluster.local/ns/sail-system/sa/sail-control-plane',
      certsDir: '/var/lib/sail/certs',
      stateDir: '/var/lib/sail/state',
      traffic: { mode: 'capture', outboundBindHost: '127.0.0.1', inboundBindHost: '10.0.0.5' },
      adminListen: '127.0.0.1:15000',
      adminAllowRemote: false,
      metricsListen: '0.0.0.0:15090',
      accessLog: false,
      meshUpstreamProtocol: 'http1',
      drainMs: 5000,
      shutdownGraceMs: 10000,
      initialFetchTimeoutMs: 15000,
    });
  });

  it('reads every key', () => {
    const c = parse(`
nodeId: sidecar~10.1.2.3~web-1.shop~shop.svc.cluster.local
labels: { app: web, version: v2, example.com/team: payments }
trustDomain: example.org
pilotAddress: pilot.example.org:15010
pilotSpiffeId: spiffe://example.org/ns/sail-system/sa/pilot
certsDir: certs
stateDir: /srv/state
traffic:
  mode: explicit
  outboundListen: 127.0.0.1:0
  inboundListen: 127.0.0.1:0
  outboundBindHost: 127.0.0.2
  inboundBindHost: 10.1.2.4
  inboundFd: 3
  originalSourceMark: 1337
adminListen: '[::1]:16000'
metricsListen: 127.0.0.1:16090
accessLog: true
drain: 2s
shutdownGrace: 1m
initialFetchTimeout: 500ms
logLevel: debug
`);
    expect(c.logLevel).toBe('debug');
    expect(c.options).toMatchObject({
      nodeId: 'sidecar~10.1.2.3~web-1.shop~shop.svc.cluster.local',
      workload: { name: 'web-1', namespace: 'shop', labels: { app: 'web', version: 'v2' } },
      trustDomain: 'example.org',
      pilotAddress: 'pilot.example.org:15010',
      pilotSpiffeId: 'spiffe://example.org/ns/sail-system/sa/pilot',
      certsDir: '/etc/sail/certs', // relative to the file's directory
      stateDir: '/srv/state',
      traffic: {
        mode: 'explicit',
        outboundListen: '127.0.0.1:0',
        inboundListen: '127.0.0.1:0',
        outboundBindHost: '127.0.0.2',
        inboundBindHost: '10.1.2.4',
        inboundFd: 3,
        originalSourceMark: 1337,
      },
      adminListen: '[::1]:16000',
      metricsListen: '127.0.0.1:16090',
      accessLog: true,
      drainMs: 2000,
      shutdownGraceMs: 60000,
      initialFetchTimeoutMs: 500,
    });
  });

  it('derives the control plane identity from the trust domain', () => {
    expect(parse(`${MINIMAL}trustDomain: corp.example\n`).options.pilotSpiffeId).toBe(
      'spiffe://corp.example/ns/sail-system/sa/sail-control-plane',
    );
  });

  it('takes flags over the file', () => {
    const c = parse(MINIMAL, {
      nodeId: 'sidecar~10.0.0.6~vm-2.prod~prod.svc.cluster.local',
      pilotAddress: '127.0.0.1:15010',
      certsDir: 'rel/certs',
      stateDir: '/tmp/state',
      adminListen: '127.0.0.1:0',
      metricsListen: '127.0.0.1:0',
      trafficMode: 'explicit',
      accessLog: true,
    });
    expect(c.options).toMatchObject({
      nodeId: 'sidecar~10.0.0.6~vm-2.prod~prod.svc.cluster.local',
      workload: { name: 'vm-2', namespace: 'prod' },
      pilotAddress: '127.0.0.1:15010',
      certsDir: path.resolve('rel/certs'),
      stateDir: '/tmp/state',
      adminListen: '127.0.0.1:0',
      metricsListen: '127.0.0.1:0',
      traffic: { mode: 'explicit', inboundBindHost: '10.0.0.6' },
      accessLog: true,
    });
  });

  it('reads concurrency from the file or the flag, 0 as one worker per core', () => {
    expect(parse(`${MINIMAL}concurrency: 4\n`).concurrency).toBe(4);
    expect(parse(`${MINIMAL}concurrency: 4\n`, { concurrency: 2 }).concurrency).toBe(2);
    expect(parse(MINIMAL, { concurrency: 0 }).concurrency).toBe(os.availableParallelism());
  });

  it('accepts pilotAddress from a flag alone', () => {
    expect(
      parse('node: { name: vm-1, ip: 10.0.0.5 }\n', { pilotAddress: '10.0.0.10:15010' }).options
        .pilotAddress,
    ).toBe('10.0.0.10:15010');
  });

  it('allows a remote admin address only when asked', () => {
    expect(
      parse(`${MINIMAL}adminListen: 0.0.0.0:15000\nadminAllowRemote: true\n`).options.adminListen,
    ).toBe('0.0.0.0:15000');
  });

  it.each([
    {
      name: 'needs the node',
      text: 'pilotAddress: 10.0.0.10:15010\n',
      want: `${FILE}: node: required: node {name, ip, namespace} or nodeId`,
    },
    {
      name: 'needs pilotAddress',
      text: 'node: { name: vm-1, ip: 10.0.0.5 }\n',
      want: `${FILE}: pilotAddress: required (or --pilot-address)`,
    },
    {
      name: 'refuses node and nodeId together',
      text: `${MINIMAL}nodeId: sidecar~10.0.0.5~vm-1.default~default.svc.cluster.local\n`,
      want: `${FILE}: nodeId: give node or nodeId, not both`,
    },
    {
      name: 'refuses a node id of another form',
      text: 'nodeId: vm-1\npilotAddress: 10.0.0.10:15010\n',
      want: `${FILE}: nodeId: want an Istio node id sidecar~IP~NAME.NAMESPACE~DOMAIN`,
    },
    {
      name: 'refuses a node ip that is not an IP',
      text: 'node: { name: vm-1, ip: vm-1.local }\npilotAddress: 10.0.0.10:15010\n',
      want: `${FILE}: node.ip: want an IP address`,
    },
    {
      name: 'refuses an unknown key',
      text: `${MINIMAL}adminPort: 15000\n`,
      want: `${FILE}: (top level): unknown field "adminPort"`,
    },
    {
      name: 'refuses an unknown traffic mode',
      text: `${MINIMAL}traffic: { mode: tproxy }\n`,
      want: `${FILE}: traffic.mode: want capture or explicit`,
    },
    {
      name: 'refuses an inbound fd that is not an inherited one',
      text: `${MINIMAL}traffic: { inboundFd: 1 }\n`,
      want: `${FILE}: traffic.inboundFd: want an inherited file descriptor (3 or above)`,
    },
    {
      name: 'refuses an inbound fd that is not a number',
      text: `${MINIMAL}traffic: { inboundFd: three }\n`,
      want: `${FILE}: traffic.inboundFd: want a file descriptor number`,
    },
    {
      name: 'refuses a source mark without the TPROXY socket',
      text: `${MINIMAL}traffic: { originalSourceMark: 1337 }\n`,
      want: `${FILE}: traffic.originalSourceMark: needs traffic.inboundFd: a caller's address is kept only for TPROXY capture (capture.mode tproxy)`,
    },
    {
      name: 'refuses a source mark out of range',
      text: `${MINIMAL}traffic: { inboundFd: 3, originalSourceMark: 0 }\n`,
      want: `${FILE}: traffic.originalSourceMark: want a packet mark (a number from 1 to 2147483647)`,
    },
    {
      name: 'refuses a pilot address without port',
      text: 'node: { name: vm-1, ip: 10.0.0.5 }\npilotAddress: 10.0.0.10\n',
      want: `${FILE}: pilotAddress: want HOST:PORT with a port from 1 to 65535 (e.g. 10.0.0.10:15010)`,
    },
    {
      name: 'refuses a bad duration',
      text: `${MINIMAL}drain: 5 seconds\n`,
      want: `${FILE}: drain: invalid duration "5 seconds": want e.g. 30s, 10m, 24h, 1h30m`,
    },
    {
      name: 'refuses a shutdown grace shorter than the drain',
      text: `${MINIMAL}drain: 10s\nshutdownGrace: 5s\n`,
      want: `${FILE}: shutdownGrace: want at least drain (close() drains within the shutdown grace)`,
    },
    {
      name: 'refuses a non-loopback admin address',
      text: `${MINIMAL}adminListen: 0.0.0.0:15000\n`,
      want: `${FILE}: adminListen: 0.0.0.0:15000 is not a loopback address`,
    },
    {
      name: 'refuses a bad label key',
      text: `${MINIMAL}labels: { "bad key": x }\n`,
      want: `${FILE}: labels.bad key: invalid label key`,
    },
    {
      name: 'refuses a bad log level',
      text: `${MINIMAL}logLevel: verbose\n`,
      want: `${FILE}: logLevel: want one of fatal, error, warn, info, debug, trace, silent`,
    },
    {
      name: 'refuses a listen address that is not HOST:PORT',
      text: `${MINIMAL}metricsListen: localhost\n`,
      want: `${FILE}: metricsListen: want HOST:PORT`,
    },
    {
      name: 'refuses a concurrency that is not a whole number',
      text: `${MINIMAL}concurrency: 1.5\n`,
      want: `${FILE}: concurrency: want a number of worker processes from 0 to 256 (0: one per core)`,
    },
    {
      name: 'refuses more workers than 256',
      text: `${MINIMAL}concurrency: 1000\n`,
      want: `${FILE}: concurrency: want a number of worker processes from 0 to 256`,
    },
    {
      name: 'refuses YAML syntax errors with the line',
      text: 'node: {name: vm-1\n',
      want: `${FILE}: invalid YAML`,
    },
  ])('$name', ({ text, want }) => {
    expect(errorOf(() => parse(text)).message).toContain(want);
  });

  it('gives the admin address error its own code', () => {
    expect(errorOf(() => parse(`${MINIMAL}adminListen: 0.0.0.0:15000\n`)).code).toBe(
      'PROXY_ADMIN_NOT_LOOPBACK',
    );
  });

  it.each([
    {
      name: 'a bad pilot address flag',
      o: { pilotAddress: 'x' },
      want: '--pilot-address: want HOST:PORT',
    },
    { name: 'a bad node id flag', o: { nodeId: 'x' }, want: '--node-id: want an Istio node id' },
    {
      name: 'a bad traffic mode flag',
      o: { trafficMode: 'y' },
      want: '--traffic-mode: want capture or explicit',
    },
    {
      name: 'a remote admin flag',
      o: { adminListen: '10.0.0.5:15000' },
      want: '--admin-listen: 10.0.0.5:15000 is not a loopback',
    },
    {
      name: 'a bad metrics flag',
      o: { metricsListen: 'nope' },
      want: '--metrics-listen: want HOST:PORT',
    },
    {
      name: 'a negative concurrency',
      o: { concurrency: -1 },
      want: '--concurrency: want a number of worker processes from 0 to 256 (0: one per core)',
    },
    {
      name: 'a concurrency that is not a number (yargs gives NaN)',
      o: { concurrency: Number.NaN },
      want: '--concurrency: want a number of worker processes from 0 to 256',
    },
  ])('names the flag for $name', ({ o, want }) => {
    expect(errorOf(() => parse(MINIMAL, o as ProxyConfigOverrides)).message).toContain(want);
  });
});

describe('loadProxyConfig', () => {
  it('names a missing file', () => {
    expect(errorOf(() => loadProxyConfig('/nonexistent/proxy.yaml')).message).toBe(
      'cannot read config file /nonexistent/proxy.yaml: ENOENT',
    );
  });

  it('resolves relative paths against the file directory', () => {
    const tmp = makeTmpDir();
    try {
      const file = path.join(tmp.dir, 'proxy.yaml');
      fs.writeFileSync(file, `${MINIMAL}certsDir: certs\nstateDir: ./state\n`);
      const c = loadProxyConfig(file);
      expect(c.options.certsDir).toBe(path.join(tmp.dir, 'certs'));
      expect(c.options.stateDir).toBe(path.join(tmp.dir, 'state'));
    } finally {
      tmp.cleanup();
    }
  });

  it('accepts the packaged sample', () => {
    const sample = path.join(__dirname, '..', '..', 'packaging', 'proxy.yaml');
    const c = loadProxyConfig(sample);
    expect(c.options.adminListen).toBe('127.0.0.1:15000');
    expect(c.options.traffic.mode).toBe('capture');
  });
});

describe('node ids', () => {
  it.each([
    {
      name: 'splits a sidecar id',
      id: 'sidecar~10.0.0.5~vm-1.default~default.svc.cluster.local',
      want: {
        type: 'sidecar',
        ip: '10.0.0.5',
        name: 'vm-1',
        namespace: 'default',
        domain: 'default.svc.cluster.local',
      },
    },
    {
      name: 'splits an IPv6 router id',
      id: 'router~fd00::5~gw.istio-system~istio-system.svc.cluster.local',
      want: {
        type: 'router',
        ip: 'fd00::5',
        name: 'gw',
        namespace: 'istio-system',
        domain: 'istio-system.svc.cluster.local',
      },
    },
    { name: 'refuses three parts', id: 'sidecar~10.0.0.5~vm-1.default' },
    { name: 'refuses another type', id: 'proxy~10.0.0.5~vm-1.default~d' },
    { name: 'refuses a name without namespace', id: 'sidecar~10.0.0.5~vm-1~d' },
    { name: 'refuses a non-IP', id: 'sidecar~host~vm-1.default~d' },
  ])('$name', ({ id, want }) => {
    expect(parseNodeId(id)).toEqual(want);
  });

  it('formats what parseNodeId reads', () => {
    const id = formatNodeId({ name: 'vm-9', ip: '10.9.9.9', namespace: 'ops' });
    expect(id).toBe('sidecar~10.9.9.9~vm-9.ops~ops.svc.cluster.local');
    expect(parseNodeId(id)).toMatchObject({ name: 'vm-9', namespace: 'ops', ip: '10.9.9.9' });
  });
});
