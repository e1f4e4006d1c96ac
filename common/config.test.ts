import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { z } from 'zod';
import {
  formatZodError,
  loadConfigFile,
  parseConfig,
  parseHostPort,
  zDuration,
  zHostPort,
} from './config';
import { ConfigError } from './errors';

/** A schema shaped like the node agent's (DESIGN §3.4), small enough to reason about. */
const schema = z.strictObject({
  nodeName: z.string().optional(),
  controlPlane: z.strictObject({ address: z.string(), caAddress: zHostPort.optional() }).optional(),
  workload: z
    .strictObject({
      namespace: z.string(),
      ports: z
        .array(z.strictObject({ name: z.string(), port: z.number().int().min(1).max(65535) }))
        .optional(),
    })
    .optional(),
  certs: z.strictObject({ dir: z.string().optional(), ttl: zDuration.optional() }).optional(),
});

const FILE = '/etc/sail/node-agent.yaml';

/** The ConfigError message parseConfig throws for `text`; fails the test if it does not throw. */
function configErrorFor(text: string): string {
  try {
    parseConfig(FILE, text, schema);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe('COMMON_CONFIG_INVALID');
    return (err as Error).message;
  }
  throw new Error('parseConfig did not throw');
}

describe('parseConfig', () => {
  it('parses and converts a valid file', () => {
    const cfg = parseConfig(
      FILE,
      [
        'nodeName: vm-1',
        'controlPlane: { address: 10.0.0.10, caAddress: "10.0.0.10:15012" }',
        'workload:',
        '  namespace: default',
        '  ports: [ { name: http, port: 9080 } ]',
        'certs: { ttl: 24h }',
      ].join('\n'),
      schema,
    );
    expect(cfg).toEqual({
      nodeName: 'vm-1',
      controlPlane: { address: '10.0.0.10', caAddress: '10.0.0.10:15012' },
      workload: { namespace: 'default', ports: [{ name: 'http', port: 9080 }] },
      certs: { ttl: 86_400_000 },
    });
  });

  it('accepts JSON, which is YAML', () => {
    expect(parseConfig(FILE, '{"nodeName": "vm-2"}', schema)).toEqual({ nodeName: 'vm-2' });
  });

  it.each([
    { name: 'an empty file', text: '' },
    { name: 'only comments', text: '# nothing here\n' },
    { name: 'an explicit null document', text: '~\n' },
  ])('treats $name as an empty object', ({ text }) => {
    expect(parseConfig(FILE, text, schema)).toEqual({});
  });

  it.each([
    {
      name: 'a wrong type names the nested field',
      text: 'workload: { namespace: 7 }',
      want: /^\/etc\/sail\/node-agent\.yaml: workload\.namespace: .*expected string/,
    },
    {
      name: 'an array element names its index',
      text: 'workload: { namespace: a, ports: [ { name: http, port: 9080 }, { name: grpc, port: 0 } ] }',
      want: /^\/etc\/sail\/node-agent\.yaml: workload\.ports\.1\.port: /,
    },
    {
      name: 'a missing required field names it',
      text: 'controlPlane: { caAddress: "1.2.3.4:15012" }',
      want: /^\/etc\/sail\/node-agent\.yaml: controlPlane\.address: /,
    },
    {
      name: 'a bad duration quotes the value',
      text: 'certs: { ttl: soon }',
      want: '/etc/sail/node-agent.yaml: certs.ttl: invalid duration "soon": want e.g. 30s, 10m, 24h, 1h30m',
    },
    {
      name: 'a zero duration is refused',
      text: 'certs: { ttl: 0s }',
      want: '/etc/sail/node-agent.yaml: certs.ttl: duration "0s" must be positive',
    },
    {
      name: 'a duration written as a number is refused',
      text: 'certs: { ttl: 3600 }',
      want: /^\/etc\/sail\/node-agent\.yaml: certs\.ttl: .*expected string/,
    },
    {
      name: 'a bad address explains the form',
      text: 'controlPlane: { address: a, caAddress: "10.0.0.10" }',
      want: '/etc/sail/node-agent.yaml: controlPlane.caAddress: want HOST:PORT (e.g. 127.0.0.1:15020, [::1]:15020)',
    },
    {
      name: 'a top-level scalar says where',
      text: 'just a string',
      want: /^\/etc\/sail\/node-agent\.yaml: \(top level\): /,
    },
  ])('$name', ({ text, want }) => {
    const message = configErrorFor(text);
    if (typeof want === 'string') expect(message).toBe(want);
    else expect(message).toMatch(want);
  });

  it.each([
    {
      name: 'an unknown top-level key',
      text: 'nodeName: a\nnodename: b',
      want: '/etc/sail/node-agent.yaml: (top level): unknown field "nodename"',
    },
    {
      name: 'an unknown nested key',
      text: 'certs: { dir: /x, tll: 1h }',
      want: '/etc/sail/node-agent.yaml: certs: unknown field "tll"',
    },
    {
      name: 'several unknown keys at once',
      text: 'certs: { a: 1, b: 2 }',
      want: '/etc/sail/node-agent.yaml: certs: unknown fields "a", "b"',
    },
  ])('rejects $name', ({ text, want }) => {
    expect(configErrorFor(text)).toBe(want);
  });

  it('reports every problem, one line each', () => {
    const lines = configErrorFor(
      'bogus: 1\ncerts: { ttl: soon }\nworkload: { namespace: 1 }',
    ).split('\n');
    expect(lines).toHaveLength(3);
    for (const line of lines) expect(line.startsWith(`${FILE}: `)).toBe(true);
    expect(lines.join('\n')).toContain('unknown field "bogus"');
    expect(lines.join('\n')).toContain('certs.ttl:');
    expect(lines.join('\n')).toContain('workload.namespace:');
  });

  it.each([
    { name: 'an unclosed flow mapping', text: 'certs: { ttl: 1h\nnodeName: a' },
    { name: 'bad indentation', text: 'workload:\n  namespace: a\n ports: []' },
    { name: 'a tab for indentation', text: 'workload:\n\tnamespace: a' },
    { name: 'an unterminated quote', text: 'nodeName: "vm-1' },
    { name: 'two documents', text: 'nodeName: a\n---\nnodeName: b' },
  ])('reports a YAML syntax error ($name) with the file and line', ({ text }) => {
    const message = configErrorFor(text);
    expect(message).toMatch(/^\/etc\/sail\/node-agent\.yaml: invalid YAML: /);
    expect(message).toMatch(/line \d+/);
    // One line: the YAML library's source excerpt is cut off.
    expect(message).not.toContain('\n');
  });

  it.each([
    { name: 'at the top level', text: 'nodeName: a\nnodeName: b' },
    { name: 'in a nested mapping', text: 'certs:\n  ttl: 1h\n  ttl: 2h' },
    { name: 'in a flow mapping', text: 'certs: { ttl: 1h, ttl: 2h }' },
  ])('rejects duplicate keys $name instead of keeping the last', ({ text }) => {
    expect(configErrorFor(text)).toMatch(
      /^\/etc\/sail\/node-agent\.yaml: invalid YAML: Map keys must be unique/,
    );
  });

  it('keeps the YAML error as the cause', () => {
    try {
      parseConfig(FILE, 'a: [', schema);
      throw new Error('parseConfig did not throw');
    } catch (err) {
      expect((err as Error).cause).toBeInstanceOf(Error);
    }
  });
});

describe('loadConfigFile', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-config-test-'));
  });
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reads and validates a file', () => {
    const file = path.join(dir, 'ok.yaml');
    fs.writeFileSync(file, 'nodeName: vm-3\n');
    expect(loadConfigFile(file, schema)).toEqual({ nodeName: 'vm-3' });
  });

  it('names the file in validation errors', () => {
    const file = path.join(dir, 'bad.yaml');
    fs.writeFileSync(file, 'certs: { ttl: forever }\n');
    expect(() => loadConfigFile(file, schema)).toThrow(
      `${file}: certs.ttl: invalid duration "forever"`,
    );
  });

  it('names the file and the errno when it cannot be read', () => {
    const missing = path.join(dir, 'missing.yaml');
    expect(() => loadConfigFile(missing, schema)).toThrow(ConfigError);
    expect(() => loadConfigFile(missing, schema)).toThrow(
      `cannot read config file ${missing}: ENOENT`,
    );
    expect(() => loadConfigFile(dir, schema)).toThrow(`cannot read config file ${dir}: EISDIR`);
  });
});

describe('parseHostPort and zHostPort', () => {
  it.each([
    { text: '127.0.0.1:15020', want: { host: '127.0.0.1', port: 15020 } },
    { text: 'localhost:0', want: { host: 'localhost', port: 0 } },
    { text: '[::1]:15020', want: { host: '::1', port: 15020 } },
    { text: '[2001:db8::1]:65535', want: { host: '2001:db8::1', port: 65535 } },
    { text: 'ca.example.com:15012', want: { host: 'ca.example.com', port: 15012 } },
  ])('splits $text', ({ text, want }) => {
    expect(parseHostPort(text)).toEqual(want);
    expect(zHostPort.safeParse(text).success).toBe(true);
  });

  it.each([
    '127.0.0.1',
    ':15020',
    '127.0.0.1:',
    '127.0.0.1:65536',
    '127.0.0.1:123456',
    '::1:15020',
    '[::1]',
    'a:b',
    'host:-1',
    '',
  ])('rejects %j', text => {
    expect(parseHostPort(text)).toBeUndefined();
    expect(zHostPort.safeParse(text).success).toBe(false);
  });
});

describe('formatZodError', () => {
  it('formats each issue as SOURCE: path: message', () => {
    const result = z
      .strictObject({ a: z.strictObject({ b: z.number() }) })
      .safeParse({ a: { b: 'x' } });
    expect(result.success).toBe(false);
    if (!result.success) expect(formatZodError('flags', result.error)).toMatch(/^flags: a\.b: /);
  });
});
