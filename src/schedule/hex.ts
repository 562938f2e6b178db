/**
 * The compact mask format of SPEC.md §1.6's golden masks: per layer the 0/1 string over KV heads 0..Hkv−1
 * (1 = retrieval) packed MSB-first into ⌈Hkv/4⌉ hex digits (head 0 = high bit of the first digit, the last digit
 * padded with zero bits), layers joined by ".". Example, 8 KV heads with only head 2 retrieval: "20".
 */
import type { HeadSchedule } from "./schedule.ts";

export function scheduleToHex(schedule: HeadSchedule): string {
  return schedule.mask.map((row) => {
    let digits = "";
    for (let h = 0; h < row.length; h += 4) {
      let nibble = 0;
      for (let b = 0; b < 4; b++) nibble = (nibble << 1) | (row[h + b] ? 1 : 0);
      digits += nibble.toString(16);
    }
    return digits;
  }).join(".");
}
