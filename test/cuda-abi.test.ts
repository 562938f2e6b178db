// ffi/symbols.ts must say exactly what cuda/include/duo.h says: every exported function with its argument and result
// types, and every enum value. Needs neither the built library nor a GPU.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readText } from "../src/runtime.ts";
import { APPEND, ATTEND, DTYPE, DUO_API_VERSION, SEG, STATUS, SYMBOLS, WEIGHT } from "../ffi/symbols.ts";

const header = await readText(decodeURIComponent(new URL("../cuda/include/duo.h", import.meta.url).pathname));
const enums = new Map([...header.matchAll(/\b(DUO_[A-Z0-9_]+)\s*=\s*(-?\d+)/g)].map((m) => [m[1]!, Number(m[2])]));

function vocabulary(cType: string): string {
  const t = cType.replace(/\s+/g, " ").trim();
  if (t.includes("*")) return /^const char ?\*$/.test(t) ? "cstring" : "buffer";
  return ({ int32_t: "i32", uint32_t: "u32", uint64_t: "u64", float: "f32", double: "f64" } as Record<string, string>)[t] ?? `C type ${t}`;
}

test("ffi/symbols.ts declares every duo.h function with the same argument and result types", () => {
  const protos = [...header.matchAll(/DUO_API\s+([^;]*?)\b(duo_[a-z_]+)\s*\(([^)]*)\)\s*;/g)];
  assert.ok(protos.length >= 10, `found only ${protos.length} prototypes in duo.h`);
  const names = protos.map((m) => m[2]!).sort();
  assert.deepEqual(Object.keys(SYMBOLS).sort(), names);
  for (const [, ret, name, params] of protos) {
    const args = params!.trim() === "void" ? [] : params!.split(",").map((p) => {
      const decl = p.trim();
      const type = decl.includes("*") ? decl.slice(0, decl.lastIndexOf("*") + 1) : decl.replace(/\s+\w+$/, "");
      return vocabulary(type);
    });
    const sym = SYMBOLS[name as keyof typeof SYMBOLS];
    assert.deepEqual([...sym.args], args, `${name}: arguments`);
    assert.equal(sym.result, vocabulary(ret!.trim()), `${name}: result`);
  }
});

test("ffi/symbols.ts constants equal the enums of duo.h", () => {
  assert.equal(DUO_API_VERSION, enums.get("DUO_API_VERSION"));
  const groups: [string, Record<string, number>][] = [
    ["DUO_", STATUS],
    ["DUO_APPEND_", APPEND],
    ["DUO_ATTEND_", ATTEND],
    ["DUO_SEG_", SEG],
    ["DUO_W_", WEIGHT],
  ];
  for (const [prefix, table] of groups) {
    for (const [key, value] of Object.entries(table)) assert.equal(value, enums.get(prefix + key), prefix + key);
  }
  assert.deepEqual(DTYPE, { f32: enums.get("DUO_F32"), f16: enums.get("DUO_F16"), bf16: enums.get("DUO_BF16"), int8: enums.get("DUO_INT8"), int4: enums.get("DUO_INT4") });
  // every enum of the header is mirrored
  const mirrored = new Set(["DUO_API_VERSION", "DUO_F32", "DUO_F16", "DUO_BF16", "DUO_INT8", "DUO_INT4"]);
  for (const [prefix, table] of groups) for (const key of Object.keys(table)) mirrored.add(prefix + key);
  assert.deepEqual([...enums.keys()].filter((k) => !mirrored.has(k)), []);
});
