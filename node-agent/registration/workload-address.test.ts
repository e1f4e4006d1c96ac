/** `workload.address`: an IP as given, `auto` as the source address toward pilot. */
import { resolveWorkloadAddress } from './workload-address';

describe('resolveWorkloadAddress', () => {
  it.each(['10.0.0.5', '127.0.0.9', 'fd00::5'])('returns the IP %s as it is', async ip => {
    expect(await resolveWorkloadAddress(ip, '10.0.0.10:15010')).toBe(ip);
  });

  it.each([
    { pilot: '127.0.0.1:15010', want: '127.0.0.1' },
    { pilot: '127.0.0.1:1', want: '127.0.0.1' },
    { pilot: '[::1]:15010', want: '::1' },
    { pilot: 'localhost:15010', want: expect.stringMatching(/^(127\.0\.0\.1|::1)$/) as string },
  ])('auto toward $pilot', async ({ pilot, want }) => {
    expect(await resolveWorkloadAddress('auto', pilot)).toEqual(want);
  });

  it('names workload.address for a value that is neither auto nor an IP', async () => {
    await expect(resolveWorkloadAddress('vm-1.example', '127.0.0.1:15010')).rejects.toThrow(
      'workload.address: "vm-1.example" is neither "auto" nor an IP address',
    );
  });

  it('names workload.address when no local address toward pilot can be found', async () => {
    // Port 0 cannot be connected to: a deterministic stand-in for "no route" (ENETUNREACH).
    await expect(resolveWorkloadAddress('auto', '127.0.0.1:0')).rejects.toThrow(
      /^workload\.address: auto cannot find this host's address toward pilot 127\.0\.0\.1:0: .*; set workload\.address to the host's IP$/,
    );
  });

  it('names workload.address when pilot is not HOST:PORT', async () => {
    await expect(resolveWorkloadAddress('auto', '10.0.0.10')).rejects.toThrow(
      'workload.address: auto needs pilot\'s address as HOST:PORT, got "10.0.0.10"',
    );
  });
});
