/**
 * Full-attention decode by the peers, on the same shape and context as ours: the plain-TypeScript loop
 * (bench/peers/plain-attention.ts, one thread, f32) and onnxruntime's GroupQueryAttention op (onnxruntime-web and
 * onnxruntime-node, our thread count, f16 for 2-byte KV dtypes — ORT's CPU GQA has no bf16 — else f32). One layer
 * is timed and scaled to the model (every layer of full attention does the same work). A peer that cannot load
 * here is reported with the reason and skipped.
 */
import { PlainDecode } from "../../../bench/peers/plain-attention.ts";
import { loadOrtPeer, ORT_FLAVORS, type OrtPeer } from "../../../bench/peers/ort.ts";
import { randomData } from "../../demo/stack.ts";
import type { KvDtype } from "../../dtype.ts";
import type { ShapeCase } from "./cases.ts";
import type { Harness } from "./harness.ts";
import { measure, probe } from "./measure.ts";
import { type BenchRecord, record } from "./record.ts";
import { decodeBytes, decodeFlopPerByte, gbps, limitGbps } from "./roofline.ts";

export const PEERS = ["plain-ts", ...ORT_FLAVORS] as const;
export type PeerName = (typeof PEERS)[number];

const fill = (a: Float32Array, seed: number) => a.set(randomData(a.length, seed));

/** Peer records for one shape at each context; `skipped` collects "peer: reason" lines. */
export async function peerSeries(h: Harness, c: ShapeCase, dtype: KvDtype, contexts: readonly number[], skipped: string[]): Promise<BenchRecord[]> {
  const { shape } = c;
  const G = shape.numHeads / shape.numKvHeads;
  const out: BenchRecord[] = [];
  const threads = Math.max(1, h.base.threads);
  const ortDtype = dtype === "f32" ? "float32" : "float16";
  const emit = (peer: PeerName, peerThreads: number, elemBytes: number, context: number, msLayer: number, samples: number, native: boolean) => {
    const layerBytes = decodeBytes({
      retrievalHeads: shape.numKvHeads, streamingHeads: 0, context, headDim: shape.headDim, bytesPerElem: elemBytes, sinkSize: 0, recentSize: 0,
    });
    const rec = record("decode", { ...h.base, backend: peer, threads: peerThreads }, {
      mode: "full", shape: shape.name, kvDtype: elemBytes === 4 ? "f32" : "f16", layers: 1, context, fits: true, peer: true,
      ms: msLayer * shape.numLayers, msMeasured: msLayer, kvBytes: layerBytes * shape.numLayers, gbps: gbps(layerBytes, msLayer),
      // Native code is not bound by the ceilings measured in wasm.
      limitGbps: h.ceilings && !native ? limitGbps(h.ceilings, decodeFlopPerByte(G, elemBytes)) : null,
      samples,
    });
    out.push(rec);
    h.emit(rec);
  };

  for (const context of contexts) {
    h.note(`peer plain-ts ${shape.name} @ ${context}`);
    const plain = new PlainDecode(shape, context, fill);
    const q = randomData(shape.numHeads * shape.headDim, 7), o = new Float32Array(q.length);
    const step = () => plain.attend(q, o);
    const t = await measure(`plain-ts ${context}`, step, await probe(step), { budgetMs: h.budgetMs / 2, maxIterations: 50 });
    emit("plain-ts", 1, 4, context, t.ms, t.samples, false);
  }

  for (const flavor of ORT_FLAVORS) {
    // f16 where our KV is 2 bytes; if this runtime cannot run ORT's f16 tensors, f32 instead (and say so).
    for (const dt of ortDtype === "float16" ? (["float16", "float32"] as const) : (["float32"] as const)) {
      let peer: OrtPeer;
      try {
        peer = await loadOrtPeer(flavor, shape, threads, dt);
      } catch (e) {
        skipped.push(`${flavor}: ${oneLine(e)}`);
        break;
      }
      let measured = 0;
      try {
        for (const context of contexts) {
          h.note(`peer ${flavor} ${dt} ${shape.name} @ ${context}`);
          try {
            const s = peer.decodeStep(context, fill);
            const t = await measure(`${flavor} ${context}`, () => s.run(), await probe(() => s.run()), { budgetMs: h.budgetMs / 2, maxIterations: 50 });
            emit(flavor, peer.threads, dt === "float32" ? 4 : 2, context, t.ms, t.samples, flavor === "onnxruntime-node");
            measured++;
          } catch (e) {
            skipped.push(`${flavor} ${dt} at ${context} tokens: ${oneLine(e)}${measured === 0 && dt === "float16" ? "; trying float32" : ""}`);
            break;
          }
        }
      } finally {
        await peer.release();
      }
      if (measured > 0) break;
    }
  }
  return out;
}

function oneLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split("\n")[0]!.slice(0, 200);
}
