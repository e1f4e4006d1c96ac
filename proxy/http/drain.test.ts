import * as http from 'node:http';
import * as http2 from 'node:http2';
import { waitFor } from '../../test/helpers/wait-for';
import { EchoOrigin, Harness, route, routeTo, staticCluster, table, vhost } from './testing';

const CLUSTER = 'outbound|80||echo.default.svc.cluster.local';

describe('drain', () => {
  const origin = new EchoOrigin();
  let harness: Harness;

  beforeAll(async () => {
    await origin.start();
    harness = await Harness.start({
      clusters: [staticCluster(CLUSTER, [origin.port])],
      routes: table('80', [vhost('echo', ['*'], [route(routeTo(CLUSTER))])]),
    });
  });

  afterAll(async () => {
    await harness.close();
    await origin.close();
  });

  it('lets in-flight requests finish, sends GOAWAY, then resolves', async () => {
    const agent = new http.Agent({ keepAlive: true });
    // An idle keep-alive connection and an in-flight one.
    await new Promise<void>((resolve, reject) => {
      http
        .get(`${harness.base}/idle`, { agent }, res => res.resume().on('end', resolve))
        .on('error', reject);
    });
    const inflight = new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get(`${harness.base}/hold`, res => resolve(res)).on('error', reject);
    });
    const res = await inflight;
    const session = http2.connect(harness.base);
    await new Promise<void>(resolve => {
      const s = session.request({ ':path': '/h2' });
      s.resume();
      s.on('end', resolve);
    });
    const goaway = new Promise<void>(resolve => session.once('goaway', () => resolve()));

    const drained = harness.manager.drain(10_000);
    await goaway;
    // The in-flight response still completes.
    origin.release();
    const body = await new Promise<string>(resolve => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve(text));
    });
    expect(body).toBe('first\nlast\n');
    await drained;
    await waitFor(() => session.closed || session.destroyed);
    agent.destroy();
  });
});
