import { ProxylessServerIndex } from './proxyless-servers';

describe('ProxylessServerIndex', () => {
  it("keeps each node's ports as the union of its streams' and says when they changed", () => {
    const idx = new ProxylessServerIndex();
    expect(idx.set('vm-1', 'c1', [8080])).toBe(true);
    const first = idx.current;
    expect(idx.set('vm-1', 'c2', [8080, 9090])).toBe(true);
    expect(idx.portsOf('vm-1')).toEqual([8080, 9090]);
    // Contexts keep the map they were given: a change replaces it.
    expect(first.get('vm-1')).toEqual(new Set([8080]));
    // c1 going away leaves c2's ports: no change.
    expect(idx.set('vm-1', 'c1', [])).toBe(false);
    expect(idx.set('vm-1', 'c2', [9090])).toBe(true);
    expect(idx.set('vm-2', 'c3', [7070])).toBe(true);
    expect(idx.set('vm-1', 'c2', [])).toBe(true);
    expect([...idx.current.keys()]).toEqual(['vm-2']);
    expect(idx.portsOf('vm-1')).toEqual([]);
    // A stream that never served anything changes nothing when it closes.
    expect(idx.set('vm-3', 'c4', [])).toBe(false);
  });
});
