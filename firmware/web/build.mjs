// Builds the configuration page: aes-js (from npm, never hand-copied) with its
// lookup tables computed instead of shipped, our page script, minified by
// esbuild and inlined into index.html; gzipped; prints the size on the wire.
import {build} from 'esbuild';
import {createRequire} from 'node:module';
import {mkdirSync, readFileSync, writeFileSync} from 'node:fs';
import {dirname, join, resolve} from 'node:path';
import {fileURLToPath} from 'node:url';
import {gzipSync} from 'node:zlib';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const out = resolve(process.argv[2] || join(here, '..', 'build', 'web'));
const LIMIT = 12 * 1024;
const TABLES = ['S', 'Si', 'T1', 'T2', 'T3', 'T4', 'T5', 'T6', 'T7', 'T8', 'U1', 'U2', 'U3', 'U4'];

const aesPath = require.resolve('aes-js');
const tablesPath = join(here, 'aes-tables.cjs');
const computed = require(tablesPath)();

function patchAes(source) {
  let patched = source;
  for (const name of TABLES) {
    const re = new RegExp('var ' + name + '\\s*=\\s*(\\[[^\\]]*\\]);');
    const m = patched.match(re);
    if (!m) throw new Error('aes-js layout changed: table ' + name + ' not found');
    const literal = Function('"use strict"; return ' + m[1])().map((x) => x >>> 0);
    const mine = computed[name];
    if (literal.length !== mine.length || literal.some((x, i) => x !== mine[i])) {
      throw new Error('computed table ' + name + ' differs from aes-js');
    }
    patched = patched.replace(re, 'var ' + name + ' = __aesTables.' + name + ';');
  }
  return 'var __aesTables = require(' + JSON.stringify(tablesPath) + ')();\n' + patched;
}

const aesTablesPlugin = {
  name: 'aes-tables',
  setup(b) {
    b.onLoad({filter: /aes-js[\\/]index\.js$/}, (args) => ({
      contents: patchAes(readFileSync(args.path, 'utf8')),
      loader: 'js',
      resolveDir: dirname(args.path),
    }));
  },
};

const result = await build({
  entryPoints: [join(here, 'app.js')],
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2018',
  write: false,
  legalComments: 'none',
  plugins: [aesTablesPlugin],
});
const js = result.outputFiles[0].text.replace(/<\/script/gi, '<\\/script');
const html = readFileSync(join(here, 'index.html'), 'utf8')
  .replace(/>\s+</g, '><')
  .replace(/\n\s*/g, '')
  .replace('<!--SCRIPT-->', () => '<script>' + js + '</script>');
const gz = gzipSync(Buffer.from(html), {level: 9});
mkdirSync(out, {recursive: true});
// only the gzipped page goes to the device (make flash copies this directory); the raw one beside it
writeFileSync(join(out, '..', 'config.html'), html);
writeFileSync(join(out, 'config.html.gz'), gz);
console.log(`config page: ${gz.length} bytes on the wire (gzip; ${html.length} bytes raw; aes-js ${require('aes-js/package.json').version}); limit ${LIMIT}`);
if (gz.length > LIMIT) {
  console.error('config page too large: ' + gz.length + ' > ' + LIMIT);
  process.exit(1);
}
