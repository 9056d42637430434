#!/usr/bin/env node
// Writes tests/data/numbers.txt: "<IEEE-754 bits as 16 hex digits> <Number#toString>"
// per line, for test_codec's check of ksfi_format_number against JavaScript: every
// power of two, the edges of the fixed/exponent forms, and seeded random doubles.
// Usage (from the repository root): node tests/data/gen/make_numbers.js
'use strict';
const fs = require('fs');
const path = require('path');
const buf = Buffer.alloc(8);
const lines = [];
const add = (d) => {
  if (!Number.isFinite(d)) return;
  buf.writeDoubleBE(d);
  lines.push(`${buf.toString('hex')} ${String(d)}`);
};
for (let e = -1074; e <= 1023; e += 1) add(2 ** e);
for (const d of [0, -0, 0.1, 1e21, 1e-7, 1e-6, 999999999999999900000, 1.5e-7, 5e-324,
  1.7976931348623157e308, 123456789012345680000, 0.30000000000000004, -1e-7, 4.35,
  2 ** 53 + 2, 1e20, 1e22, 0.000001234, 1234.5678, -0.5, 100, 1e300, 1e-300])
  add(d);
let seed = 12345;
const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed; };
for (let i = 0; i < 1500; i++) {
  buf.writeUInt32BE(rnd()); buf.writeUInt32BE(rnd(), 4);
  add(buf.readDoubleBE());
}
for (let i = 0; i < 500; i++) add((rnd() % 2000000 - 1000000) / 10 ** (rnd() % 12));
fs.writeFileSync(path.resolve(__dirname, '..', 'numbers.txt'), lines.join('\n') + '\n');
console.log(`${lines.length} numbers`);
