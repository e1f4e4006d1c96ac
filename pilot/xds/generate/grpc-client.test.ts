/**
 * A real gRPC client (`xds:///HOST:PORT` with @grpc/grpc-js-xds) configured only by what the
 * generator produces, served by a minimal State-of-the-World ADS server in this file, calling real
 * gRPC servers on loopback: routing by header to subsets, fault injection and timeouts take effect,
 * and the client never NACKs.
 */
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { register as registerGrpcXds } from '@grpc/grpc-js-xds';
import { TYPE_URL_PREFIX, type ProxyNode, type XdsType } from '../model';
import { createGenerator } from './index';
import { roundTrip } from './proto-check';
import { config, fqdn, instance, pushContext, service } from './testing';

interface DiscoveryRequest {
  type_url: string;
  resource_names: string[];
  response_nonce: string;
  error_detail?: { message: string } | null;
  node?: { id: string } | null;
}

type AdsCall = grpc.ServerDuplexStream<DiscoveryRequest, unknown>;

function loadAdsService(): grpc.ServiceDefinition {
  const deps = path.join(path.dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
  const def = protoLoader.loadSync('envoy/service/discovery/v3/ads.proto', {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map(d =>
      path.join(deps, d),
    ),
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    envoy: {
      service: {
        discovery: { v3: { AggregatedDiscoveryService: { service: grpc.ServiceDefinition } } };
      };
    };
  };
  return pkg.envoy.service.discovery.v3.AggregatedDiscoveryService.service;
}

const raw = (b: Buffer) => b;
const ECHO_PATH = '/sail.test.Echo/Echo';
const echoService: grpc.ServiceDefinition = {
  Echo: {
    path: ECHO_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  },
};

async function bind(server: grpc.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    );
  });
}

/** A gRPC server answering Echo with its own name. */
async function echoServer(name: string): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  server.addService(echoService, {
    Echo: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      cb(null, Buffer.from(name));
    },
  });
  return { server, port: await bind(server) };
}

const ECHO = fqdn('echo');
const SLOW = fqdn('slow');
const FAULTY = fqdn('faulty');

describe('a gRPC xDS client configured by the generator', () => {
  const servers: grpc.Server[] = [];
  const clients: grpc.Client[] = [];
  const nacks: string[] = [];
  let adsPort = 0;

  beforeAll(async () => {
    registerGrpcXds();
    const v1 = await echoServer('v1');
    const v2 = await echoServer('v2');
    servers.push(v1.server, v2.server);
    const instancesOf = (host: string) => [
      instance(host, 9000, '127.0.0.1', {
        port: v1.port,
        labels: { version: 'v1' },
        locality: 'r/z1',
      }),
      instance(host, 9000, '127.0.0.1', {
        port: v2.port,
        labels: { version: 'v2' },
        locality: 'r/z2',
      }),
    ];
    const push = pushContext({
      services: [
        service('echo', ['grpc:9000']),
        service('slow', ['grpc:9000']),
        service('faulty', ['grpc:9000']),
      ],
      instances: [...instancesOf(ECHO), ...instancesOf(SLOW), ...instancesOf(FAULTY)],
      configs: [
        config('DestinationRule', 'default', 'echo', {
          host: 'echo',
          subsets: [
            { name: 'v1', labels: { version: 'v1' } },
            { name: 'v2', labels: { version: 'v2' } },
          ],
        }),
        config('VirtualService', 'default', 'echo', {
          hosts: ['echo'],
          http: [
            {
              match: [{ headers: { 'x-version': { exact: 'v2' } } }],
              route: [{ destination: { host: 'echo', subset: 'v2' } }],
            },
            {
              route: [{ destination: { host: 'echo', subset: 'v1' } }],
              retries: { attempts: 2, retryOn: 'unavailable' },
            },
          ],
        }),
        config('VirtualService', 'default', 'slow', {
          hosts: ['slow'],
          http: [
            {
              timeout: '300ms',
              fault: { delay: { fixedDelay: '1s', percentage: { value: 100 } } },
              route: [{ destination: { host: 'slow' } }],
            },
          ],
        }),
        config('VirtualService', 'default', 'faulty', {
          hosts: ['faulty'],
          http: [
            {
              fault: { abort: { grpcStatus: 'RESOURCE_EXHAUSTED', percentage: { value: 100 } } },
              route: [{ destination: { host: 'faulty' } }],
            },
          ],
        }),
      ],
    });
    const generator = createGenerator();
    const node: ProxyNode = {
      id: 'grpc-client',
      type: 'proxyless',
      identity: { node: 'grpc-client', namespace: 'default', ips: [] },
      labels: {},
      metadata: {},
    };
    const ads = new grpc.Server();
    ads.addService(loadAdsService(), {
      StreamAggregatedResources: (call: AdsCall) => {
        const sent = new Map<string, { nonce: string; names: string }>();
        let nonce = 0;
        call.on('data', (req: DiscoveryRequest) => {
          if (req.error_detail?.message) nacks.push(`${req.type_url}: ${req.error_detail.message}`);
          const names = [...req.resource_names].sort().join(',');
          const last = sent.get(req.type_url);
          if (last && last.nonce === req.response_nonce && last.names === names) return; // an ACK
          const type = req.type_url as XdsType;
          const resources = generator.generate(type, node, push, req.resource_names).map(r => ({
            type_url: type,
            value: Buffer.from(roundTrip(type.slice(TYPE_URL_PREFIX.length), r.resource)),
          }));
          nonce++;
          sent.set(req.type_url, { nonce: String(nonce), names });
          call.write({ version_info: '1', type_url: type, nonce: String(nonce), resources });
        });
        call.on('error', () => undefined); // the client going away ends the stream
        call.on('end', () => call.end());
      },
    });
    servers.push(ads);
    adsPort = await bind(ads);
  });

  afterAll(() => {
    for (const c of clients) c.close();
    for (const s of servers) s.forceShutdown();
  });

  function call(target: string, metadata = new grpc.Metadata()): Promise<string> {
    const bootstrap = {
      xds_servers: [
        {
          server_uri: `127.0.0.1:${adsPort}`,
          channel_creds: [{ type: 'insecure' }],
          server_features: ['xds_v3'],
        },
      ],
      node: { id: 'grpc-client', locality: {}, metadata: { NAMESPACE: 'default' } },
    };
    const client = new grpc.Client(`xds:///${target}`, grpc.credentials.createInsecure(), {
      'grpc.TEST_ONLY_DO_NOT_USE_IN_PROD.xds_bootstrap_config': JSON.stringify(bootstrap),
    });
    clients.push(client);
    return new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        ECHO_PATH,
        raw,
        raw,
        Buffer.alloc(0),
        metadata,
        { deadline: Date.now() + 10_000 },
        (err, value) => (err ? reject(err) : resolve(value!.toString())),
      );
    });
  }

  it('routes by header to subsets', async () => {
    expect(await call('echo:9000')).toBe('v1');
    const md = new grpc.Metadata();
    md.set('x-version', 'v2');
    expect(await call('echo:9000', md)).toBe('v2');
    expect(nacks).toEqual([]);
  });

  it('injects an abort', async () => {
    await expect(call('faulty:9000')).rejects.toMatchObject({
      code: grpc.status.RESOURCE_EXHAUSTED,
    });
    expect(nacks).toEqual([]);
  });

  it('applies the route timeout to an injected delay', async () => {
    // Without the 300 ms route timeout the call would succeed after the 1 s delay.
    await expect(call('slow:9000')).rejects.toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
    expect(nacks).toEqual([]);
  });
});
