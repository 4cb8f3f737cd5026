// Validate glb files with the Khronos glTF-Validator (npm `gltf-validator`); prints one JSON report per file.
// Usage: node gltf_validate.mjs MODULE_DIR FILE...  (MODULE_DIR: the node_modules/gltf-validator folder)
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

const [moduleDir, ...files] = process.argv.slice(2);
const require = createRequire(path.join(moduleDir, "package.json"));
const validator = require(moduleDir);
const reports = {};
for (const file of files) {
  const data = await readFile(file);
  const report = await validator.validateBytes(new Uint8Array(data), { maxIssues: 200, uri: file });
  reports[file] = report.issues;
}
process.stdout.write(JSON.stringify(reports));
