// Validates Prometheus Operator objects with @kubernetes-models/prometheus-operator, the
// models generated from the operator's own Go types. Reads a JSON array of objects on stdin and
// writes a JSON array of results, one per object: {"kind", "name", "error"}, error null when
// the object is valid. The first argument is the folder holding node_modules.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const root = process.argv[2];
const objects = JSON.parse(readFileSync(0, "utf8"));
const models = new Map();

async function model(apiVersion, kind) {
  const [group, version] = apiVersion.split("/");
  const file = join(
    root, "node_modules", "@kubernetes-models", "prometheus-operator", group, version, `${kind}.js`
  );
  if (!models.has(file)) {
    const module = await import(pathToFileURL(file).href);
    models.set(file, module[kind]);
  }
  return models.get(file);
}

const results = [];
for (const object of objects) {
  const result = { kind: object.kind, name: object.metadata?.name ?? null, error: null };
  try {
    const Model = await model(object.apiVersion, object.kind);
    new Model(object).validate();
  } catch (error) {
    result.error = String(error.message ?? error);
  }
  results.push(result);
}
process.stdout.write(JSON.stringify(results));
