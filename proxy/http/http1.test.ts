import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { waitFor } from '../../test/helpers/wait-for';
import {
  EchoOrigin,
  Harness,
  RecordingTelemetry,
  TestListener,
  type OriginRequest,
  httpHandler,
  patternBytes,
  route,
  routeTo,
  runCurl,
  staticCluster,
  table,
  vhost,
} from './testing';

const CLUSTER = 'outbound|80||echo.default.svc.cluster.local';

describe('HTTP/1.1 through the connection manager', () => {
  const origin = new EchoOrigin();
  const telemetry = new RecordingTelemetry();
  const tmp = makeTmpDir('sail-http1-');
  let h: Harness;
  let base: string;

  beforeAll(async () => {
    await origin.start();
    h = await Harness.start({
      clusters: [staticCluster(CLUSTER, [origin.port])],
      routes: table('80', [vhost('echo', ['*'], [route(routeTo(CLUSTER), { name: 'default' })])]),
      telemetry,
    });
    base = h.base;
  });

  afterAll(async () => {
    await h.close();
    await origin.close();
    tmp.cleanup();
  });

  it('forwards a GET and adds x-request-id, x-forwarded-proto and x-forwarded-for', async () => {
    const before = telemetry.requests.length;
    const r = await runCurl([`${base}/hello?x=1`, '-H', 'Host: echo.default']);
    expect(r.code).toBe(0);
    const seen = JSON.parse(r.stdout.toString()) as OriginRequest;
    expect(seen.method).toBe('GET');
    expect(seen.url).toBe('/hello?x=1');
    expect(seen.headers.host).toBe('echo.default');
    expect(seen.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(seen.headers['x-forwarded-proto']).toBe('http');
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
    await waitFor(() => telemetry.requests.length > before);
    const rec = telemetry.requests[telemetry.requests.length - 1];
    expect(rec).toMatchObject({
      responseCode: 200,
      responseFlags: '-',
      method: 'GET',
      path: '/hello?x=1',
      upstreamCluster: CLUSTER,
      routeName: 'default',
      requestId: seen.headers['x-request-id'],
    });
    expect(rec?.responseBytes).toBe(r.stdout.length);
  });

  it('keeps the client connection alive across requests', async () => {
    const r = await runCurl(['-v', `${base}/a`, `${base}/b`]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/Re-using existing connection/);
    const urls = origin.requests.slice(-2).map(q => q.url);
    expect(urls).toEqual(['/a', '/b']);
  });

  it('streams a chunked upload to the upstream intact', async () => {
    const file = path.join(tmp.dir, 'chunked.bin');
    const data = patternBytes(300_000);
    fs.writeFileSync(file, data);
    const r = await runCurl([
      `${base}/upload`,
      '-H',
      'Transfer-Encoding: chunked',
      '-H',
      'Expect:',
      '--data-binary',
      `@${file}`,
    ]);
    expect(r.code).toBe(0);
    const seen = JSON.parse(r.stdout.toString()) as OriginRequest;
    expect(seen.headers['transfer-encoding']).toBe('chunked');
    expect(seen.bodyBytes).toBe(data.length);
    expect(seen.bodySha256).toBe(crypto.createHash('sha256').update(data).digest('hex'));
  });

  it('relays 100-continue from the upstream before the body is sent', async () => {
    const file = path.join(tmp.dir, 'continue.bin');
    fs.writeFileSync(file, patternBytes(10_000));
    const r = await runCurl([
      '-v',
      `${base}/continue`,
      '-H',
      'Expect: 100-continue',
      '--expect100-timeout',
      '30',
      '--data-binary',
      `@${file}`,
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/HTTP\/1\.1 100 Continue/);
    const seen = JSON.parse(r.stdout.toString()) as OriginRequest;
    expect(seen.headers.expect).toBe('100-continue');
    expect(seen.bodyBytes).toBe(10_000);
  });

  it('carries a 50 MB body both ways byte-exact', async () => {
    const size = 50 * 1024 * 1024;
    const data = patternBytes(size);
    const sha = crypto.createHash('sha256').update(data).digest('hex');
    const file = path.join(tmp.dir, 'big.bin');
    fs.writeFileSync(file, data);
    const up = await runCurl([`${base}/upload-big`, '--data-binary', `@${file}`]);
    expect(up.code).toBe(0);
    const seen = JSON.parse(up.stdout.toString()) as OriginRequest;
    expect(seen.bodyBytes).toBe(size);
    expect(seen.bodySha256).toBe(sha);

    const out = path.join(tmp.dir, 'down.bin');
    const down = await runCurl([`${base}/big?bytes=${String(size)}`, '-o', out]);
    expect(down.code).toBe(0);
    const got = crypto.createHash('sha256').update(fs.readFileSync(out)).digest('hex');
    expect(got).toBe(sha);
  });

  it('delivers a streaming response progressively', async () => {
    const first = await new Promise<string>((resolve, reject) => {
      const req = http.get(`${base}/hold`, res => {
        res.once('data', (d: Buffer) => {
          resolve(d.toString());
          res.resume();
        });
      });
      req.on('error', reject);
    });
    // The upstream has not finished: the first chunk came through on its own.
    expect(first).toBe('first\n');
    origin.release();
  });

  it('answers 404 NR when no route matches', async () => {
    const rt = table('none', [vhost('only', ['only.example'], [route(routeTo(CLUSTER))])]);
    const l = new TestListener(h.manager, httpHandler(rt));
    await l.start();
    try {
      const r = await runCurl(['-i', `http://127.0.0.1:${String(l.port)}/`]);
      expect(r.stdout.toString()).toMatch(/^HTTP\/1\.1 404/);
      expect(r.stdout.toString()).toMatch(/no route$/);
      await waitFor(() => telemetry.requests.some(q => q.responseFlags === 'NR'));
    } finally {
      await l.close();
    }
  });

  it('answers 400 to a malformed request and keeps serving', async () => {
    const net = await import('node:net');
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect(h.listener.port, '127.0.0.1', () => s.write('GARBAGE\r\n\r\n'));
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString()));
      s.on('close', () => resolve(got));
      s.on('error', reject);
    });
    expect(reply).toMatch(/^HTTP\/1\.1 400/);
    const r = await runCurl([`${base}/after`]);
    expect(r.code).toBe(0);
  });
});
