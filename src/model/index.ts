/** duo-attention/model: the Llama-family model runner (also exported from the package root). */
import "../api-globals.ts";
export { LlamaModel, type LoadOptions } from "./llama.ts";
export { Generation, type GenerateOptions, type GeneratedToken, type GenerationStats } from "./generate.ts";
export { type SamplingOptions, Sampler, Prng } from "./sampler.ts";
export { TextTokenizer, TextStream, type ChatMessage } from "./tokenizer.ts";
export { ARCHITECTURES, type Architecture, type ModelConfig, type RopeScaling, loadConfig, parseConfig } from "./config.ts";
export { inverseFrequencies } from "./rope.ts";
export { createModelKernels, type KernelsName, type ModelKernels } from "./kernels.ts";
export { openWeights, readHeader, type TensorEntry } from "./safetensors.ts";
