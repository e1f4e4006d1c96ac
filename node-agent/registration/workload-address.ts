/**
 * The address a host registers its workload at: given, or (`auto`) the local address the kernel
 * would use as the source toward pilot, which on a flat network is the address other hosts reach
 * this one at.
 */
import * as dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import * as net from 'node:net';
import { parseHostPort } from '../../common/config';
import { ConfigError, getErrorMessage } from '../../common/errors';

/**
 * Resolves `workload.address`: an IP address is returned as it is; `auto` gives the local source
 * address toward `pilotAddress` (HOST:PORT; a host name is looked up first). `auto` connects a UDP
 * socket, which only asks the kernel for a route: no packet is sent.
 * @throws ConfigError when `address` is neither `auto` nor an IP address, or `pilotAddress` is
 *   not HOST:PORT
 * @throws Error (naming `workload.address`) when there is no route toward pilot, e.g. the network
 *   is not up yet; the caller retries
 */
export async function resolveWorkloadAddress(
  address: string,
  pilotAddress: string,
): Promise<string> {
  if (net.isIP(address) !== 0) return address;
  if (address !== 'auto')
    throw new ConfigError(
      `workload.address: ${JSON.stringify(address)} is neither "auto" nor an IP address`,
    );
  const target = parseHostPort(pilotAddress);
  if (!target)
    throw new ConfigError(
      `workload.address: auto needs pilot's address as HOST:PORT, got ${JSON.stringify(pilotAddress)}`,
    );
  try {
    const ip =
      net.isIP(target.host) !== 0
        ? target.host
        : (await lookup(target.host, { verbatim: true })).address;
    return await localAddressToward(ip, target.port);
  } catch (err) {
    throw new Error(
      `workload.address: auto cannot find this host's address toward pilot ${pilotAddress}: ${getErrorMessage(err)}; set workload.address to the host's IP`,
      { cause: err },
    );
  }
}

/** The source address the kernel picks for `ip:port` (a connected UDP socket's local address). */
function localAddressToward(ip: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(net.isIPv6(ip) ? 'udp6' : 'udp4');
    const done = (err: Error | undefined, local?: string) => {
      socket.close();
      if (err) reject(err);
      else resolve(local as string);
    };
    socket.once('error', err => done(err));
    socket.connect(port, ip, () => {
      let local: string;
      try {
        local = socket.address().address;
      } catch (err) {
        done(err as Error);
        return;
      }
      // An unspecified source means the kernel chose none (no usable route).
      if (local === '0.0.0.0' || local === '::') done(new Error('no route to pilot'));
      else done(undefined, local);
    });
  });
}
