/** Host facts from this machine, and os-release parsing. */
import * as os from 'node:os';
import { hostFacts, parseOsRelease } from './host-facts';

describe('parseOsRelease', () => {
  it.each([
    {
      name: 'takes PRETTY_NAME, unquoted',
      text: 'NAME="Debian GNU/Linux"\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
      want: 'Debian GNU/Linux 12 (bookworm)',
    },
    {
      name: 'falls back to NAME and VERSION',
      text: "NAME='Foo OS'\nVERSION=3.1\n",
      want: 'Foo OS 3.1',
    },
    { name: 'takes NAME alone', text: 'NAME=Bar\n# comment\n', want: 'Bar' },
    { name: 'gives undefined without a name', text: 'ID=x\n', want: undefined },
  ])('$name', ({ text, want }) => {
    expect(parseOsRelease(text)).toBe(want);
  });
});

describe('hostFacts', () => {
  it('reports this host, fast, and caches', async () => {
    const started = process.hrtime.bigint();
    const facts = await hostFacts();
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    expect(facts).toEqual({
      os: expect.stringMatching(/\S/),
      kernel: os.release(),
      cpus: os.cpus().length,
      memoryBytes: os.totalmem(),
      hostname: os.hostname(),
    });
    expect(ms).toBeLessThan(500);
    expect(await hostFacts()).toBe(facts);
  });
});
