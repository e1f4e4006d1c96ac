import { nameTableType } from '../../../api';
import { ResourceEncoder } from '../encode';
import { generateNameTable, NAME_TABLE_TYPE, nameTableCacheKey, shortName } from './name-table';
import { config, fqdn, instance, proxy, pushContext, service } from './testing';

type Table = Record<string, { ips: string[]; shortname: string; namespace: string }>;

function tableOf(push: ReturnType<typeof pushContext>, namespace = 'default'): Table {
  const [res, ...rest] = generateNameTable(proxy('sidecar', { namespace }), push, []);
  expect(rest).toHaveLength(0);
  expect(res?.name).toBe('');
  return (res?.resource as { table: Table }).table;
}

describe('name table generator', () => {
  it('maps a service to its VIPs, skipping CIDRs, and splits NAME.NS.svc hosts', () => {
    const push = pushContext({
      services: [
        service('reviews', ['http:9080'], {
          addresses: ['240.0.0.10', '10.0.0.0/24', 'fd00::10', '240.0.0.11/32'],
        }),
      ],
      instances: [instance(fqdn('reviews'), 9080, '10.0.0.5')],
    });
    expect(tableOf(push)).toEqual({
      [fqdn('reviews')]: {
        ips: ['240.0.0.10', '240.0.0.11', 'fd00::10'],
        registry: 'ServiceEntry',
        shortname: 'reviews',
        namespace: 'default',
      },
    });
  });

  it('uses healthy endpoint IPs without VIPs, all of them when none is healthy', () => {
    const push = pushContext({
      services: [
        service('reviews', ['http:9080', 'grpc:9090']),
        service('ratings', ['http:9080']),
        service('details', ['http:9080']),
      ],
      instances: [
        instance(fqdn('reviews'), 9080, '10.0.0.6'),
        instance(fqdn('reviews'), 9090, '10.0.0.5'),
        instance(fqdn('reviews'), 9080, '10.0.0.7', { healthy: false }),
        instance(fqdn('ratings'), 9080, '10.0.0.8', { healthy: false }),
        instance(fqdn('ratings'), 9080, '10.0.0.9', { healthy: false }),
      ],
    });
    const table = tableOf(push);
    expect(table[fqdn('reviews')]?.ips).toEqual(['10.0.0.5', '10.0.0.6']);
    expect(table[fqdn('ratings')]?.ips).toEqual(['10.0.0.8', '10.0.0.9']);
    // No endpoints and no VIPs: left to the host's resolver.
    expect(table[fqdn('details')]).toBeUndefined();
  });

  it('leaves out hostname endpoints and wildcard hosts; keeps external IP services', () => {
    const push = pushContext({
      services: [
        service('api.example.com', ['https:443'], { resolution: 'DNS', location: 'MESH_EXTERNAL' }),
        service('*.example.org', ['https:443'], { addresses: ['240.0.0.1'] }),
        service('db.example.net', ['tcp:5432'], { location: 'MESH_EXTERNAL' }),
      ],
      instances: [
        instance('api.example.com', 443, 'api.example.com'),
        instance('db.example.net', 5432, '192.0.2.7'),
      ],
    });
    expect(tableOf(push)).toEqual({
      'db.example.net': {
        ips: ['192.0.2.7'],
        registry: 'ServiceEntry',
        shortname: '',
        namespace: '',
      },
    });
  });

  it('lists only services exported to and allowed by the Sidecar of the node', () => {
    const push = pushContext({
      services: [
        service('reviews', ['http:9080'], { addresses: ['240.0.0.1'] }),
        service('secret', ['http:80'], {
          namespace: 'other',
          addresses: ['240.0.0.2'],
          exportTo: ['other'],
        }),
        service('shop', ['http:80'], { namespace: 'shop', addresses: ['240.0.0.3'] }),
      ],
      configs: [
        config('Sidecar', 'restricted', 'default', {
          egress: [{ hosts: ['shop/*'] }],
        }),
      ],
    });
    expect(Object.keys(tableOf(push, 'default')).sort()).toEqual([
      fqdn('reviews'),
      fqdn('shop', 'shop'),
    ]);
    expect(Object.keys(tableOf(push, 'other')).sort()).toEqual([
      fqdn('reviews'),
      fqdn('secret', 'other'),
      fqdn('shop', 'shop'),
    ]);
    expect(Object.keys(tableOf(push, 'restricted'))).toEqual([fqdn('shop', 'shop')]);
    const key = (ns: string) => nameTableCacheKey(proxy('sidecar', { namespace: ns }), push);
    expect(key('default')).toBe(key('default'));
    expect(key('default')).not.toBe(key('restricted'));
  });

  it('answers a wildcard or "" subscription and nothing for other names', () => {
    const push = pushContext({ services: [] });
    const p = proxy('sidecar');
    expect(generateNameTable(p, push, [])).toEqual([{ name: '', resource: { table: {} } }]);
    expect(generateNameTable(p, push, [''])).toHaveLength(1);
    expect(generateNameTable(p, push, ['*'])).toHaveLength(1);
    expect(generateNameTable(p, push, ['other'])).toEqual([]);
  });

  it('shares one object per scope in a push and encodes to a stable, decodable Any', () => {
    const push = pushContext({
      services: [
        service('b', ['http:80'], { addresses: ['240.0.0.2'] }),
        service('a', ['http:80'], { addresses: ['240.0.0.1'] }),
      ],
    });
    const one = generateNameTable(proxy('sidecar', { ip: '10.0.0.1' }), push, [])[0]!;
    const two = generateNameTable(proxy('sidecar', { ip: '10.0.0.2' }), push, [])[0]!;
    expect(two.resource).toBe(one.resource);
    const encoder = new ResourceEncoder();
    const encoded = encoder.encode(NAME_TABLE_TYPE, one);
    expect(encoded.typeUrl).toBe('type.googleapis.com/sail.pilot.v1.NameTable');
    const again = new ResourceEncoder().encode(
      NAME_TABLE_TYPE,
      generateNameTable(
        proxy('sidecar'),
        pushContext({ services: push.registry.services() }),
        [],
      )[0]!,
    );
    expect(again.version).toBe(encoded.version);
    const type = nameTableType();
    const decoded = type.toObject(type.decode(encoded.value), { arrays: true }) as { table: Table };
    expect(Object.keys(decoded.table)).toEqual([fqdn('a'), fqdn('b')]);
    expect(decoded.table[fqdn('a')]).toEqual({
      ips: ['240.0.0.1'],
      registry: 'ServiceEntry',
      shortname: 'a',
      namespace: 'default',
    });
  });

  it.each([
    ['reviews.default.svc.cluster.local', 'cluster.local', 'reviews', 'default'],
    ['reviews.default.svc.corp.example', 'corp.example', 'reviews', 'default'],
    ['reviews.default.svc.cluster.local', 'corp.example', '', ''],
    ['default.svc.cluster.local', 'cluster.local', '', ''],
    ['api.example.com', 'cluster.local', '', ''],
  ])('splits %s (suffix %s)', (host, suffix, shortname, namespace) => {
    expect(shortName(host, suffix)).toEqual({ shortname, namespace });
  });
});
