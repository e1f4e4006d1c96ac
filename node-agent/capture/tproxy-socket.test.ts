import * as net from 'node:net';
import { systemClock } from '../../common/clock';
import { isNativeAddonAvailable } from '../../common/native';
import { TproxySocket } from './tproxy-socket';

const reason = !isNativeAddonAvailable()
  ? 'native addon not built'
  : process.getuid?.() !== 0
    ? 'needs root (CAP_NET_ADMIN)'
    : undefined;
if (reason) console.warn(`skipping TproxySocket tests: ${reason}`);

/** A port in use: a plain server listening on [::]:0. */
async function takePort(): Promise<{ taken: net.Server; port: number }> {
  const taken = net.createServer();
  await new Promise<void>(resolve => taken.listen(0, '::', resolve));
  return { taken, port: (taken.address() as net.AddressInfo).port };
}

(reason ? describe.skip : describe)('TproxySocket', () => {
  it('opens a dual-stack transparent socket, and closes it once', async () => {
    const s = TproxySocket.open(0);
    try {
      expect(s.host).toBe('::');
      expect(s.fd).toBeGreaterThan(2);
    } finally {
      s.close();
      s.close();
    }
  });

  it('names the port and the cause when the port is taken', async () => {
    const { taken, port } = await takePort();
    try {
      let err: unknown;
      try {
        TproxySocket.open(port).close();
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({
        code: 'AGENT_CAPTURE_TPROXY_LISTEN_FAILED',
        message: expect.stringContaining(
          `capture.mode tproxy: cannot open the transparent inbound socket on port ${port}: bind failed: Address already in use: port ${port} is in use`,
        ),
      });
    } finally {
      await new Promise(resolve => taken.close(resolve));
    }
  });

  it('waits for a port in use to be freed (a proxy that was just stopped), then opens it', async () => {
    const { taken, port } = await takePort();
    let busy = 0;
    setTimeout(() => taken.close(), 300);
    const started = Date.now();
    const s = await TproxySocket.openWhenFree(port, {
      clock: systemClock,
      onBusy: () => busy++,
    });
    try {
      expect(s.port).toBe(port);
      expect(busy).toBe(1);
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    } finally {
      s.close();
    }
  });

  it('gives up with the refusal when the port stays in use', async () => {
    const { taken, port } = await takePort();
    try {
      await expect(
        TproxySocket.openWhenFree(port, { clock: systemClock, waitMs: 300 }),
      ).rejects.toMatchObject({ code: 'AGENT_CAPTURE_TPROXY_LISTEN_FAILED' });
    } finally {
      await new Promise(resolve => taken.close(resolve));
    }
  });
});
