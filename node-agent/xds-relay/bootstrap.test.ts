import { validateBootstrapConfig } from '@grpc/grpc-js-xds/build/src/xds-bootstrap';
import { grpcBootstrap, proxylessNodeId } from './bootstrap';

const opts = {
  socketPath: '/run/sail/xds.sock',
  nodeId: 'proxyless~vm-1.default',
  namespace: 'default',
  certsDir: '/var/lib/sail/certs',
};

describe('grpcBootstrap', () => {
  it('points gRPC at the relay socket with the agent certificate files', () => {
    expect(grpcBootstrap(opts)).toEqual({
      xds_servers: [
        {
          server_uri: 'unix:///run/sail/xds.sock',
          channel_creds: [{ type: 'insecure' }],
          server_features: ['xds_v3'],
        },
      ],
      node: { id: 'proxyless~vm-1.default', locality: {}, metadata: { NAMESPACE: 'default' } },
      server_listener_resource_name_template: 'xds.istio.io/grpc/lds/inbound/%s',
      certificate_providers: {
        default: {
          plugin_name: 'file_watcher',
          config: {
            certificate_file: '/var/lib/sail/certs/cert-chain.pem',
            private_key_file: '/var/lib/sail/certs/key.pem',
            ca_certificate_file: '/var/lib/sail/certs/root-cert.pem',
            refresh_interval: '60s',
          },
        },
      },
    });
  });

  it('is accepted by grpc-js-xds as a bootstrap, certificate provider included', () => {
    const info = validateBootstrapConfig(
      JSON.parse(JSON.stringify(grpcBootstrap({ ...opts, refreshInterval: '5s' }))),
    );
    expect(info.xdsServers[0]).toMatchObject({ server_uri: 'unix:///run/sail/xds.sock' });
    expect(info.node.id).toBe('proxyless~vm-1.default');
    expect(info.serverListenerResourceNameTemplate).toBe('xds.istio.io/grpc/lds/inbound/%s');
    expect(info.certificateProviders).toEqual({
      default: {
        pluginName: 'file_watcher',
        config: {
          certificateFile: '/var/lib/sail/certs/cert-chain.pem',
          privateKeyFile: '/var/lib/sail/certs/key.pem',
          caCertificateFile: '/var/lib/sail/certs/root-cert.pem',
          refreshIntervalMs: 5_000,
        },
      },
    });
  });

  it('names proxyless clients apart from the host proxy', () => {
    expect(proxylessNodeId('vm-1', 'shop')).toBe('proxyless~vm-1.shop');
    // Given the proxy's id, pilot would serve the application as a sidecar: it is converted.
    const fromProxyId = grpcBootstrap({
      ...opts,
      nodeId: 'sidecar~10.0.0.5~vm-1.default~default.svc.cluster.local',
    });
    expect(fromProxyId.node.id).toBe('proxyless~vm-1.default');
  });

  it.each([
    { name: 'a relative socket path', o: { socketPath: 'xds.sock' }, want: /socketPath xds.sock/ },
    { name: 'a relative certs dir', o: { certsDir: 'certs' }, want: /certsDir certs/ },
    { name: 'an empty node id', o: { nodeId: '' }, want: /nodeId is empty/ },
    { name: 'an empty namespace', o: { namespace: '' }, want: /namespace is empty/ },
  ])('rejects $name', ({ o, want }) => {
    expect(() => grpcBootstrap({ ...opts, ...o })).toThrow(want);
  });
});
