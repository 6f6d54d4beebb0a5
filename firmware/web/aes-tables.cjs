// The AES lookup tables aes-js ships as 60 KB of literals, computed instead
// (GF(2^8) arithmetic, FIPS-197). The build checks every table against the
// literals in the installed aes-js and fails on any difference.
'use strict';

function mul(a, b) {
  let p = 0;
  while (b) {
    if (b & 1) p ^= a;
    a = (a << 1) ^ (a & 0x80 ? 0x11b : 0);
    b >>= 1;
  }
  return p;
}

function word(a, b, c, d) {
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

function rotr8(w) {
  return ((w >>> 8) | (w << 24)) >>> 0;
}

module.exports = function aesTables() {
  const S = [], Si = [];
  for (let x = 0; x < 256; x++) {
    let inv = 0;
    for (let y = 1; y < 256 && x; y++) if (mul(x, y) === 1) { inv = y; break; }
    let s = inv, r = inv;
    for (let i = 0; i < 4; i++) { r = ((r << 1) | (r >> 7)) & 0xff; s ^= r; }
    s ^= 0x63;
    S[x] = s;
    Si[s] = x;
  }
  const t = {S: S, Si: Si};
  const rot = (name, first) => {
    t[name + 1] = first;
    for (let k = 2; k <= 4; k++) t[name + k] = t[name + (k - 1)].map(rotr8);
  };
  rot('T', S.map((s) => word(mul(s, 2), s, s, mul(s, 3))));
  const dec = (v) => word(mul(v, 14), mul(v, 9), mul(v, 13), mul(v, 11));
  const T5 = Si.map(dec);
  t.T5 = T5;
  for (let k = 6; k <= 8; k++) t['T' + k] = t['T' + (k - 1)].map(rotr8);
  rot('U', Array.from({length: 256}, (_, x) => dec(x)));
  return t;
};
