/**
 * A hand-encoded ONNX model holding one com.microsoft GroupQueryAttention node: a decode step of full attention
 * over a past KV cache, for the onnxruntime peers. Protobuf is written directly (varints and length-delimited
 * fields of onnx.proto), so no protobuf library is needed.
 *
 * Inputs: query [1, 1, Hq·D], key/value [1, 1, Hkv·D], past_key/past_value [1, Hkv, P, D] (BNSH),
 * seqlens_k [1] int32 (= total − 1), total_sequence_length [] int32. Outputs: output [1, 1, Hq·D] and
 * present_key/present_value [1, Hkv, P + 1, D].
 */

/** TensorProto.DataType values used here. */
export const ONNX_FLOAT = 1, ONNX_INT32 = 6, ONNX_FLOAT16 = 10;

class Writer {
  private bytes: number[] = [];

  varint(n: number): this {
    // Values here stay below 2^53; split so that no 32-bit operator truncates them.
    while (n >= 0x80) {
      this.bytes.push((n % 0x80) | 0x80);
      n = Math.floor(n / 0x80);
    }
    this.bytes.push(n);
    return this;
  }
  /** wire type 0 */
  int(field: number, n: number): this {
    return this.varint(field * 8).varint(n);
  }
  /** wire type 2 */
  raw(field: number, data: Uint8Array): this {
    this.varint(field * 8 + 2).varint(data.length);
    for (const b of data) this.bytes.push(b);
    return this;
  }
  str(field: number, s: string): this {
    return this.raw(field, new TextEncoder().encode(s));
  }
  msg(field: number, build: (w: Writer) => void): this {
    const inner = new Writer();
    build(inner);
    return this.raw(field, inner.finish());
  }
  /** wire type 5 (fixed32, little-endian float) */
  float(field: number, x: number): this {
    const b = new Uint8Array(new Float32Array([x]).buffer);
    this.varint(field * 8 + 5);
    for (const v of b) this.bytes.push(v);
    return this;
  }
  finish(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

/** A dimension is a fixed size or a symbolic name. */
type Dim = number | string;

function valueInfo(w: Writer, field: number, name: string, elemType: number, dims: Dim[]): void {
  w.msg(field, (vi) => vi
    .str(1, name) // ValueInfoProto.name
    .msg(2, (tp) => tp.msg(1, (tt) => tt // TypeProto.tensor_type
      .int(1, elemType) // Tensor.elem_type
      .msg(2, (shape) => { // Tensor.shape
        for (const d of dims) shape.msg(1, (dim) => (typeof d === "number" ? dim.int(1, d) : dim.str(2, d)));
      }))));
}

export interface GqaGraph {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** ONNX_FLOAT or ONNX_FLOAT16 for query/key/value/past/outputs */
  elemType: number;
}

/** ModelProto bytes (ir_version 10, opsets "" 21 and com.microsoft 1). */
export function gqaDecodeModel(g: GqaGraph): Uint8Array {
  const { numHeads: Hq, numKvHeads: Hkv, headDim: D, elemType: e } = g;
  const w = new Writer();
  w.int(1, 10); // ModelProto.ir_version
  w.str(2, "duo-attention bench"); // producer_name
  w.msg(8, (o) => o.str(1, "").int(2, 21)); // opset_import
  w.msg(8, (o) => o.str(1, "com.microsoft").int(2, 1));
  w.msg(7, (graph) => {
    graph.msg(1, (node) => { // GraphProto.node
      for (const i of ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length"]) node.str(1, i);
      for (const o of ["output", "present_key", "present_value"]) node.str(2, o);
      node.str(3, "gqa").str(4, "GroupQueryAttention").str(7, "com.microsoft");
      node.msg(5, (a) => a.str(1, "num_heads").int(3, Hq).int(20, 2)); // AttributeProto: name, i, type INT
      node.msg(5, (a) => a.str(1, "kv_num_heads").int(3, Hkv).int(20, 2));
      node.msg(5, (a) => a.str(1, "scale").float(2, 1 / Math.sqrt(D)).int(20, 1)); // f, type FLOAT
    });
    graph.str(2, "gqa_decode");
    valueInfo(graph, 11, "query", e, [1, 1, Hq * D]);
    valueInfo(graph, 11, "key", e, [1, 1, Hkv * D]);
    valueInfo(graph, 11, "value", e, [1, 1, Hkv * D]);
    valueInfo(graph, 11, "past_key", e, [1, Hkv, "past", D]);
    valueInfo(graph, 11, "past_value", e, [1, Hkv, "past", D]);
    valueInfo(graph, 11, "seqlens_k", ONNX_INT32, [1]);
    valueInfo(graph, 11, "total_sequence_length", ONNX_INT32, []);
    valueInfo(graph, 12, "output", e, [1, 1, Hq * D]);
    valueInfo(graph, 12, "present_key", e, [1, Hkv, "present", D]);
    valueInfo(graph, 12, "present_value", e, [1, Hkv, "present", D]);
  });
  return w.finish();
}
