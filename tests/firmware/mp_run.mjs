// Run a Python script under the MicroPython WebAssembly port (npm
// @micropython/micropython-webassembly-pyscript) with files copied into its
// filesystem. Usage: node mp_run.mjs <micropython.mjs> <script.py> <dest=src>...
import {readFileSync} from 'node:fs';

const [moduleUrl, script, ...files] = process.argv.slice(2);
const {loadMicroPython} = await import(moduleUrl);
let out = '';
const mp = await loadMicroPython({heapsize: 64 * 1024 * 1024, stdout: (l) => { out += l + '\n'; },
  stderr: (l) => { out += l + '\n'; }});
mp.FS.mkdir('/lib');
mp.FS.mkdir('/data');
for (const spec of files) {
  const i = spec.indexOf('=');
  mp.FS.writeFile(spec.slice(0, i), readFileSync(spec.slice(i + 1)));
}
try {
  mp.runPython(readFileSync(script, 'utf8'));
} catch (e) {
  out += 'PYTHON ERROR: ' + e.message + '\n';
  process.stdout.write(out);
  process.exit(1);
}
process.stdout.write(out);
