// A module resolution hook: "/_peregrine/peregrine.js", the path the server
// serves the client at, resolves to the file in the package (so the docs'
// snippets run under Node as written for the browser).
const client = new URL("../../peregrine_rt/static/peregrine.js", import.meta.url).href;

export async function resolve(specifier, context, next) {
  if (specifier === "/_peregrine/peregrine.js") return { url: client, shortCircuit: true };
  return next(specifier, context);
}
