// Run a Python script under the MicroPython WebAssembly port (npm
// @micropython/micropython-webassembly-pyscript) with files copied into its
// filesystem. Usage: node mp_run.mjs <micropython.mjs> <script.py> <dest=src>...
import {readFileSync} from 'node:fs';

const [moduleUrl, script, ...files] = process.argv.slice(2);
const {loadMicroPython} = await import(moduleUrl);
const emit = (l) => process.stdout.write(l + '\n');
const mp = await loadMicroPython({heapsize: 64 * 1024 * 1024, stdout: emit, stderr: emit});
mp.FS.mkdir('/lib');
mp.FS.mkdir('/data');
for (const spec of files) {
  const i = spec.indexOf('=');
  mp.FS.writeFile(spec.slice(0, i), readFileSync(spec.slice(i + 1)));
}
try {
  mp.runPython(readFileSync(script, 'utf8'));
} catch (e) {
  emit('PYTHON ERROR: ' + e.message);
  process.exitCode = 1;
}
