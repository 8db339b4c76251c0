// The counts in tap's closing summary line (`# { total: N, pass: N, fail: N, ... }`),
// or undefined when the run printed none.
export function tapCounts(out) {
  const m = /^# \{ ([^}]*) \}$/m.exec(out);
  if (!m) return undefined;
  return Object.fromEntries(
    m[1]
      .split(', ')
      .map((kv) => kv.split(': '))
      .map(([k, v]) => [k, Number(v)]),
  );
}
