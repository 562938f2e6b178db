import { checkInt, DuoError } from "./errors.ts";

/** The attention geometry of a model. GQA group G = numHeads / numKvHeads; query head q reads KV head ⌊q/G⌋. */
export interface ModelShape {
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
}

/** Validate a shape and return its GQA group size. */
export function checkShape(shape: ModelShape): number {
  if (shape === null || typeof shape !== "object") {
    throw new DuoError("INVALID_ARGUMENT", "shape must be { numLayers, numHeads, numKvHeads, headDim }");
  }
  checkInt("shape.numLayers", shape.numLayers, 1);
  checkInt("shape.numHeads", shape.numHeads, 1);
  checkInt("shape.numKvHeads", shape.numKvHeads, 1);
  checkInt("shape.headDim", shape.headDim, 1);
  if (shape.numHeads % shape.numKvHeads !== 0) {
    throw new DuoError(
      "SHAPE_MISMATCH",
      `shape.numHeads (${shape.numHeads}) must be a multiple of shape.numKvHeads (${shape.numKvHeads})`,
    );
  }
  return shape.numHeads / shape.numKvHeads;
}
