// One DuoAttention run — a chunked prefill, then decode steps — written once and run unchanged by every real runtime
// the e2e tests drive (a browser page, a workerd module worker, Deno, Node from the packed tarball), so that each
// result can be compared with the reference backend's, computed in Node from the sources.
// Plain JavaScript with no imports: the caller hands in the package's exports (`api`), so the scenario runs against
// whatever entry that runtime resolved (the package root, `duo-attention/wasm`, a bundle).

/** Small but covering: GQA (2 query heads per KV head), a retrieval and a streaming head per layer, a prefill longer
 *  than S + R so that streaming heads evict, two prefill chunks, decode after it. */
export const SCENARIO = {
  shape: { numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 64 },
  heads: [[true, false], [false, true]],
  sinkSize: 8,
  recentSize: 32,
  kvDtype: "bf16",
  /** tokens per call: two prefill chunks, then decode steps of one token */
  calls: [96, 64, 1, 1, 1, 1, 1, 1],
};

/** Seeded inputs in [-1, 1): a linear congruential generator, so every runtime makes the same q/k/v. */
function inputs(seed) {
  let s = seed >>> 0;
  return (n) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
    return a;
  };
}

/**
 * Run the scenario with `api.DuoAttention` and the given backend options ({ backend, threads, wasmModule, ... }).
 * Returns each call's output per layer as plain arrays ([call][layer] -> [T * numHeads * headDim]), the KV bytes
 * held, and the backend that ran it.
 */
export async function runScenario(api, backendOptions) {
  const { shape, heads, sinkSize, recentSize, kvDtype, calls } = SCENARIO;
  const duo = await api.DuoAttention.create({ shape, heads, sinkSize, recentSize, kvDtype, ...backendOptions });
  try {
    const seq = duo.sequence();
    const random = inputs(2025);
    const { numLayers, numHeads: Hq, numKvHeads: Hkv, headDim: D } = shape;
    const outputs = [];
    for (const T of calls) {
      const perLayer = [];
      for (let layer = 0; layer < numLayers; layer++) {
        const q = random(T * Hq * D), k = random(T * Hkv * D), v = random(T * Hkv * D);
        perLayer.push(Array.from(await seq.attend(layer, q, k, v)));
      }
      outputs.push(perLayer);
    }
    return { backend: duo.backendName, bytes: seq.bytes(), outputs };
  } finally {
    await duo.dispose();
  }
}
