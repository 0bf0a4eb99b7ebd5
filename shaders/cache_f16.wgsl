// A decoding cache in half precision (put before kv_store.wgsl and attention_decode.wgsl;
// cache_f32.wgsl is the other choice): `C`, the element type the K/V cache holds, is f16 —
// half the cache's memory and of the bytes attention reads a token, on devices with
// `shader-f16`. K and V are rounded to f16 as they are stored and widened to f32 as they are
// read; scores, softmax and sums stay f32, so the rounding is the only difference.

enable f16;

alias C = f16;
