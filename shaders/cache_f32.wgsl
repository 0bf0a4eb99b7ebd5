// A decoding cache in f32 (put before kv_store.wgsl and attention_decode.wgsl;
// cache_f16.wgsl is the other choice): `C`, the element type the K/V cache holds, is f32.

alias C = f32;
